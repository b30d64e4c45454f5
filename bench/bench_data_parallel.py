"""Data-parallel `harness run` on CPU: one process with 2 torch threads against two processes
(torchrun, gloo) with 1 thread each, on the same cores (and one process with 1 thread beside them).

The same command runs every way, interleaved (one, two, one, two, ...), each into a fresh folder;
each way reports the median of its runs: the command's wall time (interpreter start, imports and
model load included, as a user waits for it) and the run's own `inference_seconds` from run.json
(rank 0's: from the plan to the last rank's last sample). The ways' scores are compared too
(equal up to float rounding: a CPU matmul's rounding depends on its thread count).

    .venv/bin/python bench/bench_data_parallel.py                 # tiny model, --limit 16
    .venv/bin/python bench/bench_data_parallel.py --model 20m --limit 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from models import MODELS  # noqa: E402

WAYS = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1), "1 process x 1 thread": (1, 1)}
"""The comparison asked for (the same 2 cores, as threads or as processes), and one process with one
thread: what each rank does alone, which tells the split's own cost from the threads' behaviour."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def harness_command(model: Path, out: Path, args: argparse.Namespace, processes: int) -> list[str]:
    launcher = ([] if processes == 1 else
                ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())])
    return [sys.executable, *launcher, "-m", "harness", "run", "--model", str(model), "--tasks", args.tasks,
            "--shots", args.shots, "--limit", str(args.limit), "--batch-tokens", str(args.batch_tokens),
            "--out", str(out), "--run-id", "r"]


def one_run(model: Path, args: argparse.Namespace, processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1"}
        started = time.perf_counter()
        subprocess.run(harness_command(model, Path(folder), args, processes), env=environment, check=True,
                       capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - started
        record = json.loads((Path(folder) / "r" / "run.json").read_text())
    return {"wall": wall, "inference": record["timings"]["inference_seconds"], "samples": record["counts"]["samples"],
            "means": [value["mean"] for s in record["scores"] for _, value in sorted(s["metrics"].items())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--tasks", default="parity,add_numbers", help="a choice and a generate task by default")
    parser.add_argument("--shots", default="0,2")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--batch-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = MODELS[args.model][1]()
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way, (processes, threads) in WAYS.items():
            runs[way].append(one_run(model, args, processes, threads))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; model {args.model}; tasks {args.tasks}, "
          f"shots {args.shots}, --limit {args.limit}, --batch-tokens {args.batch_tokens}; "
          f"{runs[next(iter(WAYS))][0]['samples']} samples; median of {args.repeats}")
    print("| way | median wall s | runs wall s | median inference s | runs inference s |")
    print("|---|---:|---|---:|---|")
    medians = {}
    for way, done in runs.items():
        wall = statistics.median(r["wall"] for r in done)
        inference = statistics.median(r["inference"] for r in done)
        medians[way] = (wall, inference)
        walls = ", ".join(f"{r['wall']:.1f}" for r in done)
        inferences = ", ".join(f"{r['inference']:.1f}" for r in done)
        print(f"| {way} | {wall:.1f} | {walls} | {inference:.1f} | {inferences} |")
    (two_wall, two_inference) = medians["2 processes x 1 thread"]
    for way in ("1 process x 2 threads", "1 process x 1 thread"):
        wall, inference = medians[way]
        print(f"speed-up of 2 processes over {way}: {wall / two_wall:.2f}x wall, {inference / two_inference:.2f}x "
              "inference")
    first, *others = (runs[way][0]["means"] for way in WAYS)
    largest = max(abs(a - b) for other in others for a, b in zip(first, other, strict=True))
    print(f"scores: {len(first)} metric means, largest difference between the ways {largest:.2g}")


if __name__ == "__main__":
    main()
