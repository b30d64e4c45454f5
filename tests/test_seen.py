"""`harness run --seen`: labelling the scores of a model without a training manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.scores import generalization_gap
from harness.cli import main
from harness.engine.scripted import ScriptedBackend
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.record import RunRecord
from harness.eval.run import run
from harness.seen import DeclaredSeen, declare_seen
from harness.tasks.registry import Registry
from harness.tune.manifest import write_manifest
from tests.test_manifest import hand_made


@pytest.mark.parametrize(("task", "cluster", "label"), [
    ("compare_numbers", "comparison", "seen"),
    ("compare_length", "comparison", "held_out_task"),
    ("parity", "arithmetic", "held_out_cluster"),
])
def test_declared_tasks_give_seen_held_out_task_or_cluster(task, cluster, label):
    declared = declare_seen(Registry(), "compare_numbers")
    assert declared == DeclaredSeen(frozenset({"compare_numbers"}), frozenset({"comparison"}))
    assert declared.status(task, cluster) == label


def test_a_cluster_name_declares_every_task_of_it():
    declared = declare_seen(Registry(), "arithmetic, compare_length")
    assert declared.tasks == {"add_numbers", "parity", "compare_length"}
    assert declared.clusters == {"arithmetic", "comparison"}
    assert declared.status("compare_numbers", "comparison") == "held_out_task"


def test_an_unknown_seen_name_says_which_option():
    with pytest.raises(HarnessError, match="^--seen: unknown task or cluster 'nope'"):
        declare_seen(Registry(), "parity,nope")


def folder_only(folder: Path) -> ScriptedBackend:
    """A backend that is only a model folder: run() must refuse before it asks for anything more."""
    return ScriptedBackend(str(folder), local_path=str(folder))


def test_seen_with_a_training_manifest_is_refused(tmp_path, capsys):
    write_manifest(tmp_path / "ckpt", hand_made())
    with pytest.raises(HarnessError, match="training_manifest.json, which already labels seen and held-out tasks; "
                                           "drop --seen"):
        run(RunConfig(tasks="parity"), folder_only(tmp_path / "ckpt"), Registry(), tmp_path / "out", seen="parity")
    # The command refuses before loading the model (this folder has no weights to load).
    assert main(["run", "--model", str(tmp_path / "ckpt"), "--tasks", "parity", "--seen", "parity",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'ckpt'}: has a training_manifest.json" in err
    assert not (tmp_path / "out").exists()


def test_run_with_seen_labels_scores_and_prints_the_generalization_tables(tiny_models, tmp_path, capsys):
    args = ["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity,comparison",
            "--templates", "completion,q_options", "--shots", "0,1", "--limit", "2", "--out", str(tmp_path)]
    assert main([*args, "--seen", "compare_numbers"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    (run_json,) = tmp_path.glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["seen_source"] == "--seen"
    assert record["declared_seen"] == {"tasks": ["compare_numbers"], "clusters": ["comparison"]}
    expected = {"compare_numbers": "seen", "compare_length": "held_out_task", "parity": "held_out_cluster"}
    assert len(record["scores"]) == 3 * 2 * 2
    assert all(s["seen_status"] == expected[s["task"]] for s in record["scores"])
    assert "per-cluster score by seen/held-out" in out and "generalization gap" in out and "zero- vs few-shot" in out
    zero_shot = generalization_gap(RunRecord.from_json(record))[0]
    assert zero_shot["held_out_template"] is None  # --seen names tasks, never wordings
    assert f"{100 * zero_shot['gap']:+.1f} │" in out
    # --seen enters the spec: the same command without it is another run, not a resume of this one.
    assert main(args) == 0
    runs = sorted(tmp_path.glob("*/run.json"))
    assert len(runs) == 2
    plain = next(json.loads(p.read_text()) for p in runs if p != run_json)
    assert plain["seen_source"] == "none" and "declared_seen" not in plain
    assert all("seen_status" not in s for s in plain["scores"])
