"""Training throughput on CPU: packing="packed" vs packing="padded" with the harness trainer.

Same examples (the real mixture builder over the built-in suite, so lengths are realistic), same
steps, same batch size; the two layouts run interleaved (packed, padded, packed, ...) and each
reports the median of its runs. tokens/s counts non-padding tokens only (what the trainer reports),
so the two layouts are compared on the same useful work.

    .venv/bin/python bench/bench_train.py --quick
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from models import MODELS  # noqa: E402

from harness.tasks.registry import Registry  # noqa: E402
from harness.tune.mixture import MixtureConfig, build_mixture  # noqa: E402
from harness.tune.packing import DataOrder, encode_examples  # noqa: E402
from harness.tune.trainer import TrainConfig, train  # noqa: E402

LAYOUTS = ("packed", "padded")


def positions(model_dir: Path, pairs: list[tuple[str, str]], config: TrainConfig) -> dict[str, int]:
    """Positions the model computes (rows x width, padding included) and real tokens, over all steps:
    the very micro-batches the trainer builds (same DataOrder, same collate)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    examples = encode_examples(tokenizer, pairs, config.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = DataOrder(len(examples), config.seed)
    computed = real = rows = 0
    for step in range(config.steps):
        for batch in order.step(examples, step, config.batch_size * config.grad_accum, config.batch_size,
                                config.max_length, config.packing == "packed", pad_id):
            computed += batch.input_ids.numel()
            real += batch.num_tokens
            rows += batch.input_ids.shape[0]
    lengths = [len(e.inputs) for e in examples]
    return {"computed": computed, "real": real, "rows": rows, "examples": len(examples),
            "mean_len": round(statistics.mean(lengths)), "max_len": max(lengths)}


def run_once(model_dir: Path, pairs: list[tuple[str, str]], config: TrainConfig) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        summary = train(pairs, model_dir, config, out)
    return summary.tokens_per_s, summary.seconds, summary.final_loss


def bench_model(name: str, pairs: list[tuple[str, str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    model_dir = MODELS[name][1]()
    params = sum(p.numel() for p in _load(model_dir).parameters())
    configs = {layout: TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                                   packing=layout, seed=0, log_every=10**9) for layout in LAYOUTS}
    shape = {layout: positions(model_dir, pairs, configs[layout]) for layout in LAYOUTS}
    for layout in LAYOUTS:  # warm-up (discarded): first-call costs, allocator, kernels
        run_once(model_dir, pairs, replace(configs[layout], steps=2))
    runs: dict[str, list[tuple[float, float, float]]] = {layout: [] for layout in LAYOUTS}
    for r in range(args.repeats):
        for layout in LAYOUTS:  # interleaved: packed, padded, packed, padded, ...
            runs[layout].append(run_once(model_dir, pairs, configs[layout]))
            tps, secs, loss = runs[layout][-1]
            print(f"  {name} run {r + 1} {layout}: {tps:.0f} tokens/s, {secs:.2f} s, loss {loss:.4f}", flush=True)
    out = []
    for layout in LAYOUTS:
        speeds = [t for t, _, _ in runs[layout]]
        median = statistics.median(speeds)
        # The run whose speed is the median gives the seconds (losses are identical across runs).
        pick = runs[layout][speeds.index(median)] if median in speeds else runs[layout][0]
        out.append({"model": name, "steps": args.steps, "params": params, "layout": layout, "tokens_per_s": median,
                    "runs": speeds, "seconds": pick[1], "loss": pick[2], **shape[layout]})
    return out


def _load(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir))


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | layout | steps | median tokens/s (non-padding) | runs tokens/s | median s | positions computed "
             "| of which padding | rows | final loss | packed / padded |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for row in results:
        by_model.setdefault(row["model"], {})[row["layout"]] = row
    for model, rows in by_model.items():
        ratio = rows["packed"]["tokens_per_s"] / rows["padded"]["tokens_per_s"]
        for layout in LAYOUTS:
            row = rows[layout]
            pad = row["computed"] - row["real"]
            lines.append(
                f"| {model} ({row['params'] / 1e6:.1f}M) | {layout} | {row['steps']} | {row['tokens_per_s']:.0f} "
                f"| {', '.join(f'{s:.0f}' for s in row['runs'])} | {row['seconds']:.2f} | {row['computed']} "
                f"| {pad} ({pad / row['computed']:.0%}) | {row['rows']} | {row['loss']:.4f} "
                f"| {f'{ratio:.2f}x' if layout == 'packed' else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the defaults below (kept for the documented command)")
    parser.add_argument("--models", default="tiny:20,20m:5",
                        help=f"comma list of MODEL[:STEPS] (STEPS defaults to --steps); models: {', '.join(MODELS)}")
    parser.add_argument("--examples", type=int, default=400, help="MixtureConfig.total_examples")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    mixture = build_mixture(Registry(), MixtureConfig(total_examples=args.examples, seed=0))
    pairs = [(e.prompt, e.completion) for e in mixture.examples]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"cuda available: {torch.cuda.is_available()}, torch {torch.__version__}")
    print(f"mixture: {len(pairs)} examples (hash {mixture.hash[:12]}), steps per model {args.models}, "
          f"batch size {args.batch_size}, max_length {args.max_length}, {args.repeats} runs per layout")
    results: list[dict[str, Any]] = []
    for item in args.models.split(","):
        name, _, steps = item.strip().partition(":")
        results += bench_model(name, pairs, argparse.Namespace(**{**vars(args), "steps": int(steps or args.steps)}))
    for name in dict.fromkeys(r["model"] for r in results):
        row = next(r for r in results if r["model"] == name)
        print(f"{name}: {row['examples']} examples, mean {row['mean_len']} tokens, max {row['max_len']}")
    print()
    print(table(results))
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
