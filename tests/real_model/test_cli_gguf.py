"""`harness run --model FILE.gguf` through the CLI, twice: converted once per machine, then reused.

(One copa template, not all of them, to stay within the real-model tests' time budget.)

The session fixture has already converted the file into the persistent cache (HARNESS_CACHE beside
the fetched file), exactly as a first `harness run` does; both runs here must find that folder,
trust it and leave it untouched, and the run record must name the GGUF file, not only its
conversion.
"""

from __future__ import annotations

import json
import logging

import pytest

from harness.cli import main
from tests.conftest import SHARED_DATA

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not (SHARED_DATA / "superglue").is_dir(), reason=f"shared SuperGLUE not found in {SHARED_DATA}"),
]


def test_gguf_run_twice_reuses_the_conversion(real_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HARNESS_CACHE", str(real_model.harness_cache))
    folder = real_model.folder
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    argv = ["run", "--model", str(real_model.gguf), "--tasks", "copa", "--data-dir", str(SHARED_DATA / "superglue"),
            "--templates", "q_options_what", "--limit", "4", "--out", str(tmp_path / "runs")]
    directories = []
    for attempt in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="harness.engine.gguf"):
            assert main(argv) == 0, f"run {attempt + 1} failed"
        assert f"reusing the conversion of {real_model.gguf}" in caplog.text
        assert "converting" not in caplog.text
        directories.append(sorted((tmp_path / "runs").iterdir()))
    assert directories[0] == directories[1] and len(directories[0]) == 1, "the second run is the same run"
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before, "the converted folder was rewritten"
    assert not list(folder.parent.glob(".*.partial")), "a partial conversion was left behind"

    record = json.loads((directories[0][0] / "run.json").read_text(encoding="utf-8"))
    model = record["model"]
    assert model["model"] == str(real_model.gguf)
    assert model["local_path"] == str(folder)
    assert model["gguf"] == {"path": str(real_model.gguf.resolve()), "sha256": real_model.sha256,
                             "file_type": "Q4_1", "tensor_types": {"F32": 61, "Q4_1": 210, "Q8_0": 1}}
    assert model["architecture"] == "LlamaForCausalLM" and model["num_parameters"] == 134_515_008
    assert record["counts"]["samples"] == 4
    assert record["config"]["chat_applied"] is True, "SmolLM2's chat template came through the conversion"
