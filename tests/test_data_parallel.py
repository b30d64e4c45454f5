"""Data-parallel `harness run` under torchrun: two CPU processes (gloo) write the samples and the record
one process writes, and a job that loses a rank resumes from every rank's shard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.eval.distributed import Group, Launch, detect_launch
from harness.eval.rundir import shard_name
from harness.eval.shares import my_share, units
from harness.eval.store import RunStore, SampleLog, load_run
from tests.test_resume import count_lines, without_timings

ARGS = ["run", "--tasks", "parity,add_numbers", "--shots", "0,2", "--limit", "8", "--batch-tokens", "96",
        "--run-id", "r"]
TOTAL = 2 * 6 * 2 * 8  # tasks x templates x shot counts x rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(model: Path, out: Path, processes: int) -> list[str]:
    launcher = ([] if processes == 1 else
                ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())])
    return [sys.executable, *launcher, "-m", "harness", *ARGS, "--model", str(model), "--out", str(out)]


@pytest.fixture(scope="module")
def environment(tiny_models):
    # One thread per process on both sides: a CPU matmul's rounding depends on the thread count.
    return {**os.environ, "HARNESS_CACHE": str(Path(tiny_models["tiny-llama"]).parent.parent),
            "OMP_NUM_THREADS": "1", "HARNESS_PROGRESS_INTERVAL": "0"}


@pytest.fixture(scope="module")
def reference(tiny_models, tmp_path_factory, one_torch_thread) -> Path:
    """The run in this one process (one torch thread, as each rank has)."""
    out = tmp_path_factory.mktemp("one-process")
    assert main([*ARGS, "--model", str(tiny_models["tiny-llama"]), "--out", str(out)]) == 0
    assert count_lines(out / "r" / "samples.jsonl") == TOTAL
    return out / "r"


def test_two_processes_write_what_one_process_writes(tiny_models, tmp_path, environment, reference):
    done = subprocess.run(command(tiny_models["tiny-llama"], tmp_path, 2), env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "r"
    assert (run_dir / "samples.jsonl").read_bytes() == (reference / "samples.jsonl").read_bytes()
    assert without_timings(run_dir) == without_timings(reference)
    assert sorted(p.name for p in run_dir.iterdir()) == ["lock", "run.json", "samples.jsonl", "spec.json"]
    # Rank 0 alone talks; its progress counts the samples of both ranks.
    assert done.stdout.count("run record:") == 1 and done.stdout.count("per-cluster score") == 1
    progress = [line.split(": ", 1)[1] for line in done.stderr.splitlines() if line.startswith("evaluating ")]
    assert progress[0].startswith(f"0/{TOTAL} samples") and progress[-1].startswith(f"{TOTAL}/{TOTAL} samples")
    assert progress[-1].endswith("done") and sum(line.endswith("done") for line in progress) == 1
    assert done.stdout.count("loading ") == 1


@pytest.mark.parametrize("design", ["balanced", "adaptive"])
def test_a_budgeted_run_on_two_processes_writes_what_one_process_writes(tiny_models, tmp_path, environment,
                                                                         one_torch_thread, design):
    model = tiny_models["tiny-llama"]
    one = tmp_path / "one"
    budget = ["--budget", "0.3", "--budget-design", design]
    assert main([*ARGS, "--model", str(model), "--out", str(one), *budget]) == 0
    done = subprocess.run([*command(model, tmp_path / "two", 2), *budget], env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    budgeted = json.loads((one / "r" / "run.json").read_text())["budget"]
    assert budgeted.get("design", "balanced") == design
    assert sum(cells["computed"] for cells in budgeted["cells"]) == count_lines(one / "r" / "samples.jsonl") < TOTAL
    assert (tmp_path / "two" / "r" / "samples.jsonl").read_bytes() == (one / "r" / "samples.jsonl").read_bytes()
    assert without_timings(tmp_path / "two" / "r") == without_timings(one / "r")


def test_a_bad_flag_under_torchrun_is_said_once(tiny_models, tmp_path, environment):
    failed = subprocess.run([*command(tiny_models["tiny-llama"], tmp_path, 2), "--tasks", "no_such_task"],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert failed.stderr.count("error: unknown task") == 1, failed.stderr[-3000:]
    assert "exitcode  : 2" in failed.stderr  # both ranks end with the CLI's status for bad input


def _rank_process(launcher: int, rank: int) -> int | None:
    """The pid of the worker of `launcher` (a torchrun process) whose RANK is `rank`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_resumes_from_every_shard(tiny_models, tmp_path, environment, reference):
    model = tiny_models["tiny-llama"]
    run_dir = tmp_path / "r"
    shard = run_dir / shard_name(1)
    job = subprocess.Popen(command(model, tmp_path, 2), env=environment, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while count_lines(shard) < 1 and job.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    victim = _rank_process(job.pid, 1)
    assert victim is not None, "rank 1 is not running"
    os.kill(victim, signal.SIGKILL)  # the launcher then stops the whole job, as it does for any lost rank
    assert job.wait(timeout=120) != 0
    in_shard, in_main = count_lines(shard), count_lines(run_dir / "samples.jsonl")
    assert in_shard > 0 and in_shard + in_main < TOTAL, "the kill must land mid-run for this test to mean anything"
    assert not (run_dir / "run.json").exists()

    resumed = subprocess.run(command(model, tmp_path, 2), env=environment, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["timings"]["resumed_samples"] == in_shard + in_main, "finished samples are not recomputed"
    assert without_timings(run_dir) == without_timings(reference)
    assert (run_dir / "samples.jsonl").read_bytes() == (reference / "samples.jsonl").read_bytes()
    assert not shard.exists()


def test_opening_a_run_folds_every_shard_in_and_drops_a_torn_tail(reference, tmp_path):
    record, samples = load_run(reference)
    run_dir = tmp_path / "r"
    RunStore(run_dir, record.spec).append(samples[:5])
    SampleLog(run_dir / shard_name(1)).append(samples[3:9])  # two already in samples.jsonl: folded once
    SampleLog(run_dir / shard_name(3)).append(samples[9:12])
    with (run_dir / shard_name(3)).open("ab") as handle:
        handle.write(b'{"task": "parity", "torn')
    with RunStore(run_dir, record.spec) as store:
        assert list(store.samples) == [s.key for s in samples[:12]]
    assert count_lines(run_dir / "samples.jsonl") == 12
    assert not list(run_dir.glob("samples.rank*"))


def test_a_shard_that_contradicts_samples_jsonl_is_refused_naming_its_line(reference, tmp_path):
    record, samples = load_run(reference)
    run_dir = tmp_path / "r"
    RunStore(run_dir, record.spec).append(samples[:2])
    edited = json.loads(samples[1].line())
    edited["prompt"] += " (edited)"
    (run_dir / shard_name(2)).write_text(samples[0].line() + "\n" + json.dumps(edited) + "\n")
    with pytest.raises(HarnessError, match=r"samples\.rank2\.jsonl line 2: repeats sample .* of .*samples\.jsonl "
                                           r"line 2 with other values"):
        RunStore(run_dir, record.spec)
    assert (run_dir / shard_name(2)).exists(), "a refused shard is left as it was"


class _Batched:
    """A backend stand-in that plans fixed batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def plan_batches(self, requests):
        return self.batches


def test_ranks_take_whole_batches_round_robin_and_together_take_each_request_once():
    choice = _Batched([[4, 0], [1, 2], [3]])
    generate = _Batched([[0, 1]])
    lists = [units(choice, range(5), {1, 2}, 2), units(generate, range(2), set(), 2)]
    done = [{1, 2}, set()]
    shares = [my_share(lists, done, rank, 2) for rank in (0, 1)]
    # The fully done batch [1, 2] is skipped; the rest are dealt 0, 1, 0 across both lists.
    assert shares == [[{0, 4}, {0, 1}], [{3}, set()]]


def test_a_backend_without_a_batch_plan_is_split_into_blocks_and_a_bad_plan_is_refused():
    assert units(object(), range(7), {0}, 3) == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(HarnessError, match="plan_batches did not give each of the 3 requests exactly one batch"):
        units(_Batched([[0, 1], [1, 2]]), range(3), set(), 2)


def test_the_launch_is_read_from_the_launchers_environment():
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert detect_launch({}) is None
    assert detect_launch({**base, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    assert detect_launch({**base, "WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    with pytest.raises(HarnessError, match="environment variable RANK=None"):
        detect_launch({**base, "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(HarnessError, match="MASTER_PORT is not set"):
        detect_launch({"MASTER_ADDR": "h", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})



class _Exchange:
    """torch.distributed's all_gather_object between two ranks, the other one having sent `theirs`."""

    def __init__(self, rank, theirs):
        self.rank, self.theirs = rank, theirs

    def all_gather_object(self, out, mine):
        out[:] = [mine, self.theirs] if self.rank == 0 else [self.theirs, mine]


def _group(rank: int, theirs) -> Group:
    group = Group.__new__(Group)  # no process group: the exchange is faked
    group.rank, group.world_size, group._dist = rank, 2, _Exchange(rank, theirs)
    return group


def test_an_error_on_another_rank_reaches_rank_0_as_one_line_naming_the_rank():
    assert _group(0, None).agree(lambda: 7) == 7
    with pytest.raises(HarnessError, match=r"^rank 1 of 2: .*samples\.rank1\.jsonl: cannot write"):
        _group(0, "r/samples.rank1.jsonl: cannot write (No space left on device)").agree(lambda: 7)

    def bug():
        raise KeyError("oops")

    with pytest.raises(KeyError):  # a bug re-raises where it happened, so its traceback shows there
        _group(1, None).agree(bug)
    with pytest.raises(HarnessError, match="^rank 1 of 2: KeyError: 'oops'$"):
        _group(0, "KeyError: 'oops'").agree(lambda: 7)
