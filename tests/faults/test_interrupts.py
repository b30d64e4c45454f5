"""Items 3 and 4 of the fault findings: SIGTERM ends a run like Ctrl-C, and a kill during the
generation phase loses at most the generations still in flight; the same command then ends with the
record an uninterrupted run writes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_resume import count_lines, environment, run_command, without_timings  # noqa: F401

TOTAL = 2 * 6 * 2 * 16  # tasks x templates x shot counts x rows of `run_command`


@pytest.fixture(scope="module")
def reference(tiny_models, tmp_path_factory, environment):  # noqa: F811
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(run_command(tiny_models["tiny-llama"], out), check=True, env=environment, capture_output=True,
                   timeout=300)
    return out / "r"


def interrupt_after(command: list[str], samples: Path, lines: int, sig: int, environment) -> tuple[int, str]:  # noqa: F811
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 240
    while count_lines(samples) < lines and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def resume_and_compare(command: list[str], run_dir: Path, reference: Path, written: int, environment) -> None:  # noqa: F811
    resumed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["timings"]["resumed_samples"] == written, "finished samples are not recomputed"
    assert without_timings(run_dir) == without_timings(reference)
    assert (run_dir / "samples.jsonl").read_bytes() == (reference / "samples.jsonl").read_bytes()


def test_sigterm_is_treated_like_ctrl_c(tiny_models, tmp_path, reference, environment):  # noqa: F811
    command = run_command(tiny_models["tiny-llama"], tmp_path)
    samples = tmp_path / "r" / "samples.jsonl"
    code, err = interrupt_after(command, samples, 40, signal.SIGTERM, environment)
    assert code == 130, err
    assert "interrupted: finished samples are saved; rerun the same command to resume" in err
    assert "Traceback" not in err
    written = count_lines(samples)
    assert 0 < written < TOTAL
    resume_and_compare(command, tmp_path / "r", reference, written, environment)


def test_kill_9_during_generation_loses_only_generations_in_flight(tiny_models, tmp_path, reference, environment):  # noqa: F811
    """parity's 384 choice samples come first; add_numbers' 384 generations after them."""
    command = run_command(tiny_models["tiny-llama"], tmp_path)
    samples = tmp_path / "r" / "samples.jsonl"
    choice_samples = TOTAL // 2
    interrupt_after(command, samples, choice_samples + 30, signal.SIGKILL, environment)
    written = count_lines(samples)
    assert choice_samples < written < TOTAL, "the kill must land in the generation phase"
    resume_and_compare(command, tmp_path / "r", reference, written, environment)
