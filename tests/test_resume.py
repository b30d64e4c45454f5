"""A run killed with SIGKILL at an arbitrary point resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main


def run_command(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "run", "--model", str(model), "--tasks", "parity,add_numbers",
            "--shots", "0,2", "--limit", "16", "--batch-tokens", "96", "--out", str(out), "--run-id", "r", *extra]


def without_timings(run_dir: Path) -> dict:
    record = json.loads((run_dir / "run.json").read_text())
    record.pop("timings")
    return record


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def environment(tiny_models):
    env = dict(os.environ)
    env["HARNESS_CACHE"] = str(Path(tiny_models["tiny-llama"]).parent.parent)
    return env


def test_kill_9_then_same_command_gives_identical_record(tiny_models, tmp_path, environment):
    model = tiny_models["tiny-llama"]
    reference = tmp_path / "reference"
    subprocess.run(run_command(model, reference), check=True, env=environment, capture_output=True, timeout=300)
    total = count_lines(reference / "r" / "samples.jsonl")
    assert total == 2 * 6 * 2 * 16

    crashed = tmp_path / "crashed"
    samples = crashed / "r" / "samples.jsonl"
    process = subprocess.Popen(run_command(model, crashed), env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while count_lines(samples) < 40 and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = count_lines(samples)
    assert 0 < written < total, "the kill must land mid-run for this test to mean anything"
    assert not (crashed / "r" / "run.json").exists(), "an interrupted run must not look complete"

    # A crash can also tear the last line; resume drops it rather than trusting half a record.
    with samples.open("ab") as handle:
        handle.write(b'{"key": "parity|torn')

    resumed = subprocess.run(run_command(model, crashed), env=environment, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((crashed / "r" / "run.json").read_text())
    assert record["timings"]["resumed_samples"] == written, "finished samples are not recomputed"
    assert without_timings(crashed / "r") == without_timings(reference / "r")
    assert samples.read_bytes() == (reference / "r" / "samples.jsonl").read_bytes()


def test_complete_run_is_shown_again_and_never_overwritten_without_flag(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(Path(tiny_models["tiny-llama"]).parent.parent))
    args = ["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity", "--templates", "completion",
            "--limit", "3", "--out", str(tmp_path), "--run-id", "r"]
    assert main(args) == 0
    first = (tmp_path / "r" / "run.json").read_text()
    table = capsys.readouterr().out
    # The same command again shows the finished record without recomputing it.
    assert main(args) == 0
    assert capsys.readouterr().out == table and (tmp_path / "r" / "run.json").read_text() == first
    # Another command on the same run directory is refused.
    assert main([*args, "--limit", "4"]) == 2
    assert "holds a complete run of a different command" in capsys.readouterr().err
    assert (tmp_path / "r" / "run.json").read_text() == first
    assert main([*args, "--limit", "4", "--overwrite"]) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["counts"]["samples"] == 4


def test_resume_refuses_a_different_command(tiny_models, tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text('{"model": "something else"}')
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity", "--limit", "2",
                 "--out", str(tmp_path), "--run-id", "r"])
    assert code == 2
    assert "was started by a different command" in capsys.readouterr().err
