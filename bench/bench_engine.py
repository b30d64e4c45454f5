"""Harness engine vs lm-eval 0.4.13's hf backend: same model, same prompts, one process.

    python bench/bench_engine.py --quick          # the RESULTS.md run (a few minutes on 2 CPU cores)
    python bench/bench_engine.py --runs 5 --rows 40

For each model (the built-in tiny Llama and a ~20M-parameter random Llama) and each workload
(bench/workloads.py), it times, interleaved and repeated (`--runs`, median reported):

- harness, fast (prefix-tree scoring, own greedy loop) and plain (`fast=False`: one row per option,
  `model.generate`), both with the default 4096-token batch budget;
- lm-eval `HFLM(batch_size="auto")` and `HFLM(batch_size=B)` for the best B of `--lm-eval-batches`
  (chosen on one timed pass each, then timed `--runs` times).

Reported per cell: median wall seconds, token positions the model actually computed (padding
included, counted by a forward pre-hook), throughput (the workload's own tokens per second: context
plus continuation per option, or prompt plus generated tokens), the lm-eval/harness time ratio,
and agreement (largest per-option |log-likelihood difference| against lm-eval, argmax and
is_greedy disagreements, differing generations). Then start-up to the first model call (model load
excluded) for `harness.eval.run.run` and lm-eval's `simple_evaluate`. Writes JSON to `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402

from bench.lm_eval_side import LmEvalRunner, startup_lm_eval  # noqa: E402
from bench.models import MODELS  # noqa: E402
from bench.workloads import Workload, build_workloads  # noqa: E402
from harness.engine import HFBackend  # noqa: E402


class ForwardCounter:
    """Counts the token positions fed to a model's forward (every call, padding included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.positions = 0
        self.calls = 0
        self.first_call: float | None = None
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.positions += ids.numel()
        self.calls += 1
        if self.first_call is None:
            self.first_call = time.perf_counter()

    def reset(self) -> None:
        self.positions, self.calls, self.first_call = 0, 0, None


def collect(batches: Any) -> dict[int, Any]:
    return {index: value for batch in batches for index, value in batch}


def harness_run(backend: HFBackend, workload: Workload) -> tuple[list[list[float]], list[list[bool]], list[str]]:
    scores = collect(backend.score(workload.choice))
    texts = collect(backend.generate(workload.generate))
    lls = [[r.logprob for r in scores[i]] for i in range(len(workload.choice))]
    greedy = [[r.is_greedy for r in scores[i]] for i in range(len(workload.choice))]
    return lls, greedy, [texts[i] for i in range(len(workload.generate))]


def nominal_tokens(backend: HFBackend, workload: Workload, generations: list[str]) -> int:
    """The workload's own tokens, independent of layout: what a throughput figure divides by."""
    total = 0
    for request in workload.choice:
        for option in request.continuations:
            context, continuation = backend.encode_pair(request.context, option)
            total += len(context) + len(continuation)
    for request, text in zip(workload.generate, generations, strict=True):
        total += len(backend.encode(request.context)) + len(backend.tokenizer.encode(text, add_special_tokens=False))
    return total


def timed(fn: Callable[[], Any], counter: ForwardCounter) -> tuple[float, int, Any]:
    counter.reset()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, counter.positions, result


def compare(ours: tuple, theirs: tuple) -> dict[str, Any]:
    lls, greedy, texts = ours
    their_lls, their_greedy, their_texts = theirs
    diffs = [abs(a - b) for row, other in zip(lls, their_lls, strict=True) for a, b in zip(row, other, strict=True)]
    argmax = sum(max(range(len(a)), key=a.__getitem__) != max(range(len(b)), key=b.__getitem__)
                 for a, b in zip(lls, their_lls, strict=True))
    return {
        "max_abs_loglik_diff": max(diffs, default=0.0),
        "argmax_disagreements": argmax,
        "is_greedy_disagreements": sum(a != b for r, o in zip(greedy, their_greedy, strict=True)
                                       for a, b in zip(r, o, strict=True)),
        "generation_mismatches": sum(a != b for a, b in zip(texts, their_texts, strict=True)),
    }


def bench_model(label: str, path: Path, shrink: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every workload on one model; `shrink` divides the row counts (for slow models)."""
    fast = HFBackend(str(path), dtype=args.dtype, device=args.device, fast=True, batch_tokens=args.batch_tokens)
    plain = HFBackend(str(path), dtype=args.dtype, device=args.device, fast=False, batch_tokens=args.batch_tokens)
    static = HFBackend(str(path), dtype=args.dtype, device=args.device, static_cache=True,
                       batch_tokens=args.batch_tokens) if args.static_cache else None
    lm_eval = LmEvalRunner(path, args.lm_eval_batches, trial_every=args.trial_every, device=args.device,
                           dtype=args.dtype)
    counters = {"fast": ForwardCounter(fast.model), "plain": ForwardCounter(plain.model),
                "lm-eval": ForwardCounter(lm_eval.model)}
    if static is not None:
        counters["static"] = ForwardCounter(static.model)
    parameters = sum(p.numel() for p in fast.model.parameters())
    # Body parameters: what every computed position multiplies (embedding lookups cost no FLOPs,
    # the LM head runs only where logits are kept), so 2 x body x positions is a floor on FLOPs.
    body = parameters - fast.model.get_input_embeddings().weight.numel()
    if not getattr(fast.model.config, "tie_word_embeddings", False):
        body -= fast.model.get_output_embeddings().weight.numel()
    weight_bytes = sum(p.numel() * p.element_size() for p in fast.model.parameters())
    print(f"\n## {label}: {parameters / 1e6:.1f}M parameters, vocabulary {len(fast.tokenizer)}", flush=True)
    workloads = build_workloads(fast.tokenizer, rows=max(1, args.rows // shrink),
                                generate_rows=max(1, args.generate_rows // shrink))
    out_rows = {"rows_per_template": max(1, args.rows // shrink),
                "generate_rows_per_template": max(1, args.generate_rows // shrink)}
    out: dict[str, Any] = {"model": label, "parameters": parameters, "vocabulary": len(fast.tokenizer),
                           "path": str(path), **out_rows, "workloads": []}
    for workload in workloads:
        print(f"\n### {workload.name}: {len(workload)} requests ({workload.description})", flush=True)
        best_batch, trial_seconds = lm_eval.pick_batch_size(workload)
        print(f"lm-eval fixed batch sizes, one pass each: {trial_seconds} -> {best_batch}", flush=True)
        engines: dict[str, Callable[[], Any]] = {
            "harness fast": lambda w=workload: harness_run(fast, w),
            "harness plain": lambda w=workload: harness_run(plain, w),
            f"lm-eval bs={best_batch}": lambda w=workload, b=best_batch: lm_eval.run(w, b),
        }
        if static is not None and workload.generate:
            engines["harness static-cache"] = lambda w=workload: harness_run(static, w)
        # lm-eval's auto batch size first runs 5 forward passes of 64 rows of the longest window
        # (of max_length for generation); on a CPU that probe alone can take minutes.
        probe = lm_eval.detection_positions(workload)
        probe_gflop = 2 * parameters * probe / 1e9
        if probe_gflop <= args.auto_max_gflop:
            engines["lm-eval auto"] = lambda w=workload: lm_eval.run(w, "auto")
        else:
            print(f"lm-eval auto skipped: its probe feeds {probe} positions (~{probe_gflop:.0f} GFLOP) "
                  f"> --auto-max-gflop {args.auto_max_gflop}", flush=True)
        counter_of = {"harness fast": "fast", "harness plain": "plain", "harness static-cache": "static"}
        times: dict[str, list[float]] = {name: [] for name in engines}
        positions: dict[str, int] = {}
        calls: dict[str, int] = {}
        results: dict[str, Any] = {}
        for _ in range(args.runs):  # interleaved, so drifting machine load hits every engine alike
            for name, fn in engines.items():
                counter = counters[counter_of.get(name, "lm-eval")]
                seconds, computed, result = timed(fn, counter)
                times[name].append(seconds)
                positions[name], calls[name], results[name] = computed, counter.calls, result
        tokens = nominal_tokens(fast, workload, results["harness fast"][2])
        fixed = f"lm-eval bs={best_batch}"
        rows = []
        for name in engines:
            median = statistics.median(times[name])
            auto = statistics.median(times["lm-eval auto"]) / median if "lm-eval auto" in times else None
            rows.append({
                "engine": name, "median_s": median, "runs_s": times[name], "computed_positions": positions[name],
                "tokens_per_s": tokens / median,
                "speedup_vs_lm_eval_fixed": statistics.median(times[fixed]) / median,
                "speedup_vs_lm_eval_auto": auto, "forward_calls": calls[name],
                "body_tflops": 2 * body * positions[name] / median / 1e12,
                "mfu": 2 * body * positions[name] / median / 1e12 / args.peak_tflops,
                # Every call reads every weight at least once: a floor on the bytes moved.
                "weight_read_gbs": calls[name] * weight_bytes / median / 1e9,
            })
        agreement = {name: compare(results[name], results[fixed]) for name in engines if name != fixed}
        entry = {"workload": workload.name, "description": workload.description, "requests": len(workload),
                 "nominal_tokens": tokens, "lm_eval_best_fixed_batch": best_batch,
                 "lm_eval_auto_probe_positions": probe,
                 "lm_eval_batch_trials_s": trial_seconds, "engines": rows, "agreement_vs_lm_eval_fixed": agreement}
        out["workloads"].append(entry)
        print_table(entry)
    out["startup"] = measure_startup(path, lm_eval, args)
    print(f"\nstart-up to first model call ({out['startup']['what']}):")
    for label, median in out["startup"]["median_s"].items():
        runs = ", ".join(f"{t:.3f}" for t in out["startup"]["runs_s"][label])
        print(f"- {label}: median {median:.3f} s (runs {runs})", flush=True)
    return out


def print_table(entry: dict[str, Any]) -> None:
    print(f"workload tokens: {entry['nominal_tokens']}")
    print("| engine | median s | runs s | positions computed | calls | tokens/s | lm-eval fixed / this | "
          "lm-eval auto / this | body TFLOP/s (MFU) | weight reads GB/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in entry["engines"]:
        runs = ", ".join(f"{t:.2f}" for t in row["runs_s"])
        auto = f"{row['speedup_vs_lm_eval_auto']:.2f}x" if row["speedup_vs_lm_eval_auto"] else "not run"
        print(f"| {row['engine']} | {row['median_s']:.3f} | {runs} | {row['computed_positions']} | "
              f"{row['forward_calls']} | {row['tokens_per_s']:.0f} | {row['speedup_vs_lm_eval_fixed']:.2f}x | "
              f"{auto} | {row['body_tflops']:.3f} ({row['mfu']:.2%}) | {row['weight_read_gbs']:.1f} |")
    for name, agreement in entry["agreement_vs_lm_eval_fixed"].items():
        print(f"- {name} vs lm-eval fixed: {json.dumps(agreement)}")
    sys.stdout.flush()


class _Stop(Exception):
    """Raised by the first model call to end a start-up measurement there."""


def measure_startup(path: Path, lm_eval: LmEvalRunner, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds from the call that starts an evaluation to its first model call, model loaded.

    The harness gets a freshly loaded backend each time (load not timed), so the weights hash it
    starts at load time is on the clock as far as it is in a real `harness run`.
    """
    from harness.eval.config import RunConfig
    from harness.eval.run import run
    from harness.tasks.registry import Registry

    def stop_at_first_call(module: Any, args_: tuple, kwargs: dict) -> None:
        raise _Stop

    spec = {"tasks": "compare_numbers", "shots": 0, "limit": args.startup_rows}
    times: dict[str, list[float]] = {"harness": [], "lm-eval, include_defaults=False": [],
                                     "lm-eval, default TaskManager": []}
    for _ in range(args.runs):
        backend = HFBackend(str(path), dtype=args.dtype, device=args.device)
        with tempfile.TemporaryDirectory() as tmp:
            handle = backend.model.register_forward_pre_hook(stop_at_first_call, with_kwargs=True)
            start = time.perf_counter()
            try:
                run(RunConfig(tasks=spec["tasks"], shots=(0,), limit=spec["limit"], chat="off"), backend,
                    Registry(), out=Path(tmp))
            except _Stop:
                times["harness"].append(time.perf_counter() - start)
            finally:
                handle.remove()
            for label, defaults in (("lm-eval, include_defaults=False", False), ("lm-eval, default TaskManager", True)):
                folder = Path(tmp) / ("with-defaults" if defaults else "local-only")
                times[label].append(startup_lm_eval(lm_eval, backend, folder, spec,
                                                    stop_at_first_call, _Stop, include_defaults=defaults))
    return {
        "what": f"compare_numbers, 0-shot, every template, {args.startup_rows} rows each; lm-eval gets the "
                "harness's rendered prompts as local JSONL tasks",
        "median_s": {label: statistics.median(runs) for label, runs in times.items()},
        "runs_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rows (the RESULTS.md configuration)")
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions per engine (median reported)")
    parser.add_argument("--rows", type=int, default=None, help="rows per task and template (choice)")
    parser.add_argument("--generate-rows", type=int, default=None, help="rows per task and template (generate)")
    parser.add_argument("--startup-rows", type=int, default=20)
    parser.add_argument("--trial-every", type=int, default=3,
                        help="lm-eval batch sizes are tried on every n-th request of a workload")
    parser.add_argument("--lm-eval-batches", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--models", default="tiny,20m,20m-smallvocab", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: see bench/gpu.md; untested here)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-tokens", type=int, default=4096, help="the harness's token budget (its default)")
    parser.add_argument("--static-cache", action="store_true", help="also time generation with the static KV cache "
                        "(`HFBackend(static_cache=True)`; compiled on CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="device peak for MFU (H100 bf16 dense)")
    parser.add_argument("--peak-gbs", type=float, default=3000.0, help="device memory bandwidth for the "
                        "weight-read figure of generation (H100: ~3 TB/s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both engines")
    parser.add_argument("--auto-max-gflop", type=float, default=2000,
                        help="skip lm-eval batch_size=auto where its size probe alone costs more")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    args.rows = args.rows or (4 if args.quick else 12)
    args.generate_rows = args.generate_rows or (3 if args.quick else 8)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    import platform

    report = {"command": " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads,
              "platform": platform.platform(), "torch": torch.__version__, "gpu": torch.cuda.is_available()},
              "models": []}
    started = time.perf_counter()
    for label in args.models.split(","):
        shrink, build = MODELS[label]
        report["models"].append(bench_model(label, build(), shrink, args))
    report["total_s"] = time.perf_counter() - started
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\ntotal {report['total_s']:.0f} s; JSON in {args.json}")


if __name__ == "__main__":
    main()
