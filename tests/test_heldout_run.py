"""One run over every shared real data set: per-template tables and per-category NIv2 scores."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")


def test_shared_rte_cb_copa_niv2_ifeval_in_one_run(tiny_models, tmp_path, capsys):
    code = main([
        "run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "rte,cb,copa,niv2,ifeval",
        "--data-dir", str(SHARED_DATA / "superglue"), "--data", f"niv2={SHARED_DATA / 'niv2'}",
        "--data", f"ifeval={SHARED_DATA / 'ifeval'}", "--limit", "4", "--out", str(tmp_path), "--run-id", "r",
    ])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    per_template = {(s["task"], s["template"]) for s in record["scores"] if "group" not in s}
    templates = {t["name"]: len(t["templates"]) for t in record["tasks"]}
    assert templates["rte"] == templates["cb"] == 8 and templates["copa"] == 9 and templates["ifeval"] == 1
    assert len(per_template) == sum(templates.values())
    categories = {s["group"]["value"] for s in record["scores"] if s.get("group", {}).get("field") == "category"}
    assert len(categories) == 8, "every shared NIv2 category is covered"
    niv2 = {s["group"]["value"]: s["n"] for s in record["scores"] if s.get("group", {}).get("field") == "task_name"}
    assert len(niv2) == 8 and set(niv2.values()) == {4}, "--limit 4 is 4 instances of each NIv2 task"
    ifeval = next(s for s in record["scores"] if s["task"] == "ifeval")
    assert set(ifeval["metrics"]) == {"prompt_level_strict_acc", "inst_level_strict_acc",
                                      "prompt_level_loose_acc", "inst_level_loose_acc"}
    assert "by group" in out and "Textual Entailment" in out
