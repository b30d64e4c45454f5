"""Fault findings on the run directory, each checked through `harness run` (the scripted backend: no
model, about a second a run) against a reference run made once without a fault:

1. a run id is one plain folder name inside --out, and no command deletes or changes a folder that
   holds a user's files; --overwrite removes only a run's own files;
2. an --out that is a file is refused in one line;
3. a full disk ends in one line saying how many samples are safe, and the same command resumes;
4. a second process on a run in progress is refused, naming the first; a kill -9 leaves no stale lock;
5. every line of samples.jsonl is checked on resume and on load, and every stored metric and score
   mean is recomputed, so an edited file is refused rather than reported;
6. spec.json that is not JSON, that disagrees with run.json, or that is missing beside samples.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.engine.scripted import ScriptedBackend, minus_lengths
from harness.eval.config import RunConfig
from harness.eval.run import run
from harness.tasks.registry import Registry

TASKS, LIMIT = "parity,add_numbers", 3
TOTAL = 2 * 6 * LIMIT  # parity's choice samples (6 templates x 3 rows) first, then add_numbers' generations
RESUME_REMEDY = "delete the line to recompute that sample, or rerun with --overwrite to start the run again"
LOAD_REMEDY = "rerun its command with --overwrite"


def command(out: Path, *extra: str, run_id: str = "r") -> list[str]:
    return ["run", "--backend", "scripted", "--model", "m", "--tasks", TASKS, "--limit", str(LIMIT),
            "--out", str(out), "--run-id", run_id, *extra]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def run_files(folder: Path) -> dict[str, bytes | None]:
    """The snapshot of a run folder without its `lock` (which a refused run of the folder may take)."""
    return {name: data for name, data in snapshot(folder).items() if name != "lock"}


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """The run directory ends with the reference's record (timings aside) and its very sample bytes."""
    def record(folder: Path) -> dict:
        return {k: v for k, v in json.loads((folder / "run.json").read_text()).items() if k != "timings"}
    assert record(run_dir) == record(reference)
    assert (run_dir / "samples.jsonl").read_bytes() == (reference / "samples.jsonl").read_bytes()
    assert (run_dir / "spec.json").read_bytes() == (reference / "spec.json").read_bytes()
    assert not list(run_dir.glob("*.tmp"))


def resumed_samples(run_dir: Path) -> int:
    return json.loads((run_dir / "run.json").read_text())["timings"]["resumed_samples"]


@pytest.fixture
def error_line(capsys):
    """The one error line a failed command printed on stderr, with no traceback. Progress lines may
    come before it (off a terminal a run reports its progress as plain lines); nothing comes after."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
        return errors[0]

    return read


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert main(command(out)) == 0
    assert count_lines(out / "r" / "samples.jsonl") == TOTAL
    return out / "r"


def incomplete_run(reference: Path, folder: Path, lines: int = 10) -> Path:
    """A run killed after `lines` samples: the reference's spec and its first sample lines."""
    folder.mkdir(parents=True)
    shutil.copy(reference / "spec.json", folder / "spec.json")
    kept = (reference / "samples.jsonl").read_bytes().splitlines(keepends=True)[:lines]
    (folder / "samples.jsonl").write_bytes(b"".join(kept))
    return folder


def complete_copy(reference: Path, folder: Path) -> Path:
    shutil.copytree(reference, folder)
    (folder / "lock").unlink(missing_ok=True)
    return folder


# 1. Run ids and folders that are not the run's.

@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
@pytest.mark.parametrize("run_id", ["../x", "ABSOLUTE", "a/b", "", ".", ".."])
def test_a_run_id_that_is_not_a_plain_name_is_refused_and_nothing_is_written(tmp_path, error_line, run_id,
                                                                             overwrite):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "spec.json").write_text('{"mine": true}')
    run_id = str(victim) if run_id == "ABSOLUTE" else run_id
    before = snapshot(tmp_path)
    assert main(command(tmp_path / "results", *overwrite, run_id=run_id)) == 2
    problem = "is a path" if "/" in run_id else "is not a folder name"
    assert error_line() == (f"error: --run-id {run_id!r} {problem}; give a plain folder name (such as "
                                "'my-run'), which is made inside --out")
    assert snapshot(tmp_path) == before, "nothing is written, inside --out or outside it"


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
@pytest.mark.parametrize("contents", [
    {"thesis.tex": b"my thesis", "data/rows.csv": b"a,b\n"},
    {"spec.json": b'{"mine": true}', "thesis.tex": b"my thesis"},
    {"run.json": b"my notes", "samples.jsonl": b"line one\n", "thesis.tex": b"x"},
], ids=["own-names", "a-spec-of-theirs", "a-run-json-of-theirs"])
def test_a_folder_holding_a_users_files_is_never_deleted_or_changed(tmp_path, error_line, contents, overwrite):
    out = tmp_path / "results"
    users = out / "users"
    for name, data in contents.items():
        (users / name).parent.mkdir(parents=True, exist_ok=True)
        (users / name).write_bytes(data)
    before = snapshot(tmp_path)
    assert main(command(out, *overwrite, run_id="users")) == 2
    line = error_line()
    if "run.json" not in contents or overwrite:
        first = sorted(p.name for p in users.iterdir() if p.name not in ("spec.json", "run.json", "samples.jsonl"))[0]
        assert line == (f"error: {users}: is not empty and holds no run record of this harness (it holds {first!r}), "
                        "so no run writes into it or clears it; choose another --run-id or --out")
    else:  # the same command would show a complete run: its run.json is read, and refused
        assert line.startswith(f"error: {users / 'run.json'}: not valid JSON (")
    assert snapshot(tmp_path) == before


def test_overwrite_clears_only_a_run_folder_that_holds_nothing_else(tmp_path, error_line, reference):
    run_dir = complete_copy(reference, tmp_path / "r")
    (run_dir / "notes.txt").write_text("what I saw in this run")
    before = snapshot(tmp_path)
    assert main(command(tmp_path, "--overwrite")) == 2
    assert error_line() == (f"error: {run_dir}: holds files that are not part of its run ('notes.txt'), and "
                                "--overwrite removes only a run's own files from a folder that holds nothing else; "
                                "move them elsewhere, or choose another --run-id")
    assert snapshot(tmp_path) == before
    # Without the user's file, --overwrite redoes the run; resuming and showing it keep the notes' neighbours.
    (run_dir / "notes.txt").unlink()
    assert main(command(tmp_path, "--overwrite")) == 0
    assert_same_run(run_dir, reference)
    assert resumed_samples(run_dir) == 0, "--overwrite starts again"
    assert sorted(p.name for p in run_dir.iterdir()) == ["lock", "run.json", "samples.jsonl", "spec.json"]


# 2. --out naming a file.

def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, error_line):
    out = tmp_path / "results"
    out.write_text("not a folder")
    assert main(command(out)) == 2
    assert error_line() == f"error: --out {out}: is a file, not a folder; pass a folder to hold the run directories"
    assert out.read_text() == "not a folder"


# 3. A full disk.

@pytest.mark.parametrize(("failing_fsync", "failing_file", "saved"), [
    (1, "spec.json", 0),  # the spec, written first
    (4, "samples.jsonl", 16),  # the third batch of 8 (its two samples are undone)
    (8, "samples.jsonl", TOTAL),  # the final rewrite in canonical order
    (9, "run.json", TOTAL),  # the record, written last
])
def test_a_full_disk_ends_in_one_line_and_the_same_command_resumes(tmp_path, error_line, monkeypatch, reference,
                                                                   failing_fsync, failing_file, saved):
    calls = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_fsync:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run_dir = tmp_path / "r"
    assert main(command(tmp_path)) == 2
    samples = run_dir / "samples.jsonl"
    assert error_line() == (f"error: {run_dir / failing_file}: cannot write, the disk is full (No space left on "
                                f"device); {saved} finished samples are on disk in {samples}; free space, then rerun "
                                "the same command to resume")
    assert count_lines(samples) == saved, "the failed batch is undone, the ones before it are intact"
    if saved:
        assert samples.read_bytes().endswith(b"\n")
    assert not (run_dir / "run.json").exists() and not list(run_dir.glob("*.tmp"))
    monkeypatch.undo()
    assert main(command(tmp_path)) == 0
    assert_same_run(run_dir, reference)
    assert resumed_samples(run_dir) == saved


# 4. Two processes on one run directory.

def test_a_second_process_on_a_run_in_progress_is_refused_naming_the_first(tmp_path, reference):
    second = {}

    def score(index, request):
        if not second:  # mid-run: the same command, from another process
            second["result"] = subprocess.run([sys.executable, "-m", "harness", *command(tmp_path)],
                                              capture_output=True, text=True, timeout=120)
        return minus_lengths(index, request)

    run(RunConfig(tasks=TASKS, limit=LIMIT), ScriptedBackend("m", score=score), Registry(), tmp_path, run_id="r",
        reuse_complete=True)
    refused = second["result"]
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    errors = [line for line in refused.stderr.strip().splitlines() if line.startswith("error:")]
    assert errors == refused.stderr.strip().splitlines()[-1:], refused.stderr
    assert errors[0].startswith(f"error: {tmp_path / 'r'}: is in use by another harness run (pid {os.getpid()} "
                                f"on host {socket.gethostname()}, started "), refused.stderr
    assert errors[0].endswith("wait for it to finish or stop that process, then rerun the same command")
    assert_same_run(tmp_path / "r", reference)  # every sample once


HOLD_LOCK = ("import sys; from pathlib import Path; from harness.eval.rundir import RunLock; "
             "lock = RunLock(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()")


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(tmp_path, error_line, reference):
    run_dir = incomplete_run(reference, tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = snapshot(run_dir)
        assert main(command(tmp_path)) == 2
        line = error_line()
        assert line.startswith(f"error: {run_dir}: is in use by another harness run (pid {holder.pid} on host "
                               f"{socket.gethostname()}, started "), line
        assert snapshot(run_dir) == before, "the refused process wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert main(command(tmp_path)) == 0, "the kernel released the killed process's lock"
    assert_same_run(run_dir, reference)
    assert resumed_samples(run_dir) == 10


# 5. The sample log.

@pytest.mark.parametrize(("line", "problem"), [
    (b'{"hello": 1}\n', " lacks field 'key'"),
    (b"[1, 2]\n", " is not a JSON object"),
    (b"\xff\xfe not text\n", ": is not UTF-8 text (byte 1)"),
    (b'{"key": "parity|\n', ": is not valid JSON (Invalid control character at: line 1 column 17 (char 16))"),
])
def test_a_line_that_is_not_a_sample_is_refused_on_resume_naming_it(tmp_path, error_line, reference, line,
                                                                    problem):
    run_dir = incomplete_run(reference, tmp_path / "r")
    samples = run_dir / "samples.jsonl"
    lines = samples.read_bytes().splitlines(keepends=True)
    samples.write_bytes(b"".join([*lines[:4], line, *lines[4:]]))
    before = run_files(run_dir)
    assert main(command(tmp_path)) == 2
    assert error_line() == f"error: {samples} line 5{problem}; {RESUME_REMEDY}"
    assert run_files(run_dir) == before, "nothing after the bad line is dropped"
    samples.write_bytes(b"".join(lines))  # the line deleted, as the message says
    assert main(command(tmp_path)) == 0
    assert_same_run(run_dir, reference)
    assert resumed_samples(run_dir) == 10


def _edit(path: Path, number: int, edit) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    sample = json.loads(lines[number - 1])
    edit(sample)
    lines[number - 1] = json.dumps(sample, sort_keys=True, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sample["key"]


def _flip(sample: dict, metric: str) -> None:
    sample["metrics"][metric] = 1.0 - sample["metrics"][metric]


@pytest.mark.parametrize(("number", "edit", "field"), [
    (3, lambda s: _flip(s, "acc"), "metrics.acc"),
    (2, lambda s: s["logprobs"].reverse(), "metrics.acc"),
    (6, lambda s: s.update(prompt=s["prompt"] + " "), "prompt"),
])
def test_an_edited_sample_is_refused_on_resume(tmp_path, error_line, reference, number, edit, field):
    run_dir = incomplete_run(reference, tmp_path / "r")
    samples = run_dir / "samples.jsonl"
    key = _edit(samples, number, edit)
    stored = json.loads(samples.read_text().splitlines()[number - 1])
    original = json.loads((reference / "samples.jsonl").read_text().splitlines()[number - 1])
    value, expected = ((stored["prompt"], original["prompt"]) if field == "prompt" else
                       (stored["metrics"]["acc"], 1.0 - stored["metrics"]["acc"]))
    assert main(command(tmp_path)) == 2
    assert error_line() == (f"error: {samples} line {number}: sample {key} has {field} {value!r}, and its plan "
                                f"and stored answer give {expected!r} (the line was edited, or belongs to another "
                                f"run); {RESUME_REMEDY}")


def test_an_edited_generation_is_refused_on_resume(tmp_path, error_line, reference):
    run_dir = incomplete_run(reference, tmp_path / "r", lines=TOTAL)
    samples = run_dir / "samples.jsonl"
    number = TOTAL - 1
    original = json.loads(samples.read_text().splitlines()[number - 1])
    key = _edit(samples, number, lambda s: s.update(response=s["references"][0]))  # right answer, metric left at 0
    assert original["metrics"] == {"exact_match": 0.0}
    assert main(command(tmp_path)) == 2
    assert error_line() == (f"error: {samples} line {number}: sample {key} has metrics.exact_match 0.0, and its "
                                "plan and stored answer give 1.0 (the line was edited, or belongs to another run); "
                                f"{RESUME_REMEDY}")


def _first_line_with(path: Path, metric: str, value: float) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if json.loads(line)["metrics"].get(metric) == value)


def test_an_edited_metric_in_a_complete_run_is_refused_when_shown_again_or_compared(tmp_path, error_line,
                                                                                   reference):
    run_dir = complete_copy(reference, tmp_path / "r")
    samples = run_dir / "samples.jsonl"
    number = _first_line_with(samples, "acc", 0.0)
    _edit(samples, number, lambda s: _flip(s, "acc"))
    expected = (f"error: {samples} line {number}: has metric 'acc' 1.0, but its stored log-likelihoods give 0.0 "
                f"(the line was edited or damaged); {LOAD_REMEDY}")
    assert main(command(tmp_path)) == 2
    assert error_line() == expected
    assert main(["compare", str(reference), str(run_dir)]) == 2
    assert error_line() == expected


def test_an_edited_mean_or_an_unrecomputable_metric_is_caught_by_the_record(tmp_path, error_line, reference):
    """run.json's means are recomputed from samples.jsonl: an edited mean, or an edited metric that the
    sample alone cannot recompute (IFEval's, NIv2's), makes the two disagree."""
    run_dir = complete_copy(reference, tmp_path / "r")
    run_path = run_dir / "run.json"
    record = json.loads(run_path.read_text())
    index, score = next((i, s) for i, s in enumerate(record["scores"]) if s["metrics"]["acc"]["mean"] < 1)
    stored = score["metrics"]["acc"]["mean"]
    score["metrics"]["acc"]["mean"] = 1.0
    run_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    assert main(command(tmp_path)) == 2
    assert error_line() == (f"error: {run_path}: scores[{index}] ({score['task']}, template {score['template']}, "
                                f"0 shots) has acc mean 1.0, and its {score['n']} samples in samples.jsonl give "
                                f"{stored!r} (a file was edited or damaged); {LOAD_REMEDY}")
    assert main(["compare", str(reference), str(run_dir)]) == 2
    assert error_line().startswith(f"error: {run_path}: scores[{index}] (")


# 6. spec.json.

def test_a_spec_that_is_not_json_is_reported_as_such(tmp_path, error_line, reference):
    run_dir = incomplete_run(reference, tmp_path / "r")
    (run_dir / "spec.json").write_text('{"harness_version": ')
    before = run_files(run_dir)
    assert main(command(tmp_path)) == 2
    assert error_line() == (f"error: {run_dir / 'spec.json'}: is not valid JSON (Expecting value: line 1 column "
                                "21 (char 20)); rerun with --overwrite to start the run again, or choose another "
                                "--run-id")
    assert run_files(run_dir) == before
    assert main(command(tmp_path, "--overwrite")) == 0
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda spec: spec.write_text(spec.read_text().replace('"seed": 1234', '"seed": 1')),
     "differs from the spec inside run.json; the run folder is damaged"),
    (lambda spec: spec.write_text("{"), "is not valid JSON (Expecting property name enclosed in double quotes: "
                                        "line 1 column 2 (char 1)); the run folder is damaged"),
    (lambda spec: spec.unlink(), "missing beside run.json; the run folder is damaged"),
], ids=["edited", "not-json", "deleted"])
def test_a_damaged_spec_of_a_complete_run_is_refused_when_shown_again(tmp_path, error_line, reference, damage,
                                                                      problem):
    run_dir = complete_copy(reference, tmp_path / "r")
    damage(run_dir / "spec.json")
    before = run_files(run_dir)
    assert main(command(tmp_path)) == 2
    assert error_line() == f"error: {run_dir / 'spec.json'}: {problem} ({LOAD_REMEDY})"
    assert run_files(run_dir) == before


def test_samples_without_a_spec_are_refused(tmp_path, error_line, reference):
    run_dir = incomplete_run(reference, tmp_path / "r")
    (run_dir / "spec.json").unlink()
    before = run_files(run_dir)
    assert main(command(tmp_path)) == 2
    assert error_line() == (f"error: {run_dir}: holds samples.jsonl but no spec.json, so its samples cannot be "
                                "checked against this command; rerun with --overwrite to start the run again, or "
                                "choose another --run-id")
    assert run_files(run_dir) == before, "no spec is written for samples it cannot vouch for"
    assert main(command(tmp_path, "--overwrite")) == 0
    assert_same_run(run_dir, reference)
