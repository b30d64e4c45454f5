"""How well a budgeted run's estimate matches the full run: per-template scores, quantiles over
templates, and interval coverage, for the model-based estimator beside the naive one.

Given FULL run directories (every (template, row) cell computed), each (task, shots) is budgeted
by taking the design's cells from the full run's samples, which is exactly what a budgeted run
computes, since a cell's value does not depend on which other cells are computed (with `--design
adaptive`, the first half's cells are taken, the allocation reads them and names the rest, as
`harness run --budget-design adaptive` does). The estimate is
then compared with the full run's per-template means and their distribution over templates:

- template MAE: mean absolute error of the per-template scores, in points (0-100);
- quantile MAE: absolute error of each quantile over templates (5/25/50/75/95), in points;
- coverage: how often the interval of a template's score, and of each quantile, holds the full
  run's value;
- floor: the worst quantile error left when the model's parameters are known exactly (fitted to
  every cell of the full run) and each uncomputed cell is filled with its expected value under
  that fit (a template whose cells are equal within each class, row-independent, exactly). What
  remains is the uncomputed cells' own 0/1 outcomes, which no model of template effect, row
  difficulty and class can predict: an optimistic bound for this family of estimators, since
  the fit has seen the cells it predicts.

Errors are averaged over the (task, shots) of a run, then the median over design seeds is
reported; coverage is pooled over tasks and seeds. Markdown, with the command line and the wall and
CPU time, goes to stdout and, with --out FILE, to FILE, to paste into bench/RESULTS.md.

    .venv/bin/python bench/bench_budget.py RUN_DIR [RUN_DIR ...] --seeds 10
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.budget import ESTIMATORS, QUANTILES, SUMMARY, estimate_budget, score_summary  # noqa: E402
from harness.analysis.budget_allocation import second_half  # noqa: E402
from harness.analysis.budget_matrix import CellMatrix, run_matrices  # noqa: E402
from harness.analysis.irt import fit_with_priors  # noqa: E402
from harness.analysis.template_features import tag_design  # noqa: E402
from harness.eval.budget_design import design_cells  # noqa: E402
from harness.eval.budget_plan import Budget  # noqa: E402
from harness.eval.store import load_run  # noqa: E402

QUANTILE_COLUMNS = [SUMMARY.index(f"q{round(100 * q):02d}") for q in QUANTILES]
TOLERANCE = 5e-4  # an interval holds a value it misses by less than half of the 0.1 point a report shows


def full_matrices(directory: Path) -> tuple[str, list[CellMatrix], int]:
    """The run's (task, shots) matrices that vary, and how many were left out for having every cell
    equal (a tiny model that never gets a generation task right): any estimate is exact there."""
    record, samples = load_run(directory)
    matrices = list(run_matrices(record, samples).values())
    for matrix in matrices:
        if not matrix.computed.all():
            missing = int((~matrix.computed).sum())
            raise SystemExit(f"{directory}: task {matrix.task!r} ({matrix.shots}-shot) lacks {missing} cells; "
                             "give a full run (every template on every row)")
    varying = [m for m in matrices if np.ptp(m.sums / m.counts) > 0]
    return record.run_id, varying, len(matrices) - len(varying)


def oracle_values(matrix: CellMatrix) -> np.ndarray:
    """(templates x rows): each cell's expected value under the model fitted to every cell of the
    full run, the cell's own value for a row-independent template (see `floor` in the docstring)."""
    cells = matrix.cells()
    features, _ = tag_design(matrix.tags)
    fitted, _ = fit_with_priors(cells, features)
    expected = fitted.probabilities(features)
    values = matrix.sums / matrix.counts
    classes = matrix.row_classes
    for t in range(len(matrix.templates)):
        if all(np.ptp(values[t, classes == k]) == 0 for k in np.unique(classes)) and np.isin(values[t], (0, 1)).all():
            expected[t] = values[t]
    return expected


def budget_cells(matrix: CellMatrix, budget: float, seed: int, design: str) -> list[tuple[str, str]]:
    """The cells `harness run --budget BUDGET --budget-design DESIGN --seed SEED` computes, as
    `harness.eval.budget_plan` and `harness.adaptive_run` choose them."""
    asked = Budget(budget, str(budget), design)
    templates, rows = len(matrix.templates), len(matrix.rows)
    first = design_cells(matrix.templates, matrix.rows, asked.balanced_cells_of(templates, rows), seed)
    return first + (second_half(matrix, asked, seed, templates, rows) if design == "adaptive" else [])


def measure(matrix: CellMatrix, budget: float, seed: int, covariates: bool, resamples: int,
            confidence: float, oracle: np.ndarray, estimator: str, design: str) -> dict[str, float]:
    truth = matrix.sums.sum(axis=1) / matrix.counts.sum(axis=1)
    subset = matrix.subset(budget_cells(matrix, budget, seed, design))
    filled = np.where(subset.computed, matrix.sums, matrix.counts * oracle).sum(axis=1) / matrix.counts.sum(axis=1)
    floor_quantiles = score_summary(filled)[QUANTILE_COLUMNS]
    start = time.perf_counter()
    estimate = estimate_budget(subset, covariates=covariates, seed=seed, resamples=resamples, confidence=confidence,
                               estimator=estimator)
    seconds = time.perf_counter() - start
    scores = np.array([t.score.value for t in estimate.templates])
    naive = np.array([np.nan if t.naive is None else t.naive for t in estimate.templates])
    low = np.array([t.score.low for t in estimate.templates])
    high = np.array([t.score.high for t in estimate.templates])
    true_summary = score_summary(truth)
    quantiles = [q for _, q in estimate.distribution.quantiles]
    true_quantiles = true_summary[QUANTILE_COLUMNS]
    naive_quantiles = score_summary(naive)[QUANTILE_COLUMNS]
    return {
        "template_mae": 100 * float(np.mean(np.abs(scores - truth))),
        "naive_template_mae": 100 * float(np.nanmean(np.abs(naive - truth))),
        **{f"q_err_{i}": 100 * abs(q.value - true_quantiles[i]) for i, q in enumerate(quantiles)},
        **{f"naive_q_err_{i}": 100 * abs(naive_quantiles[i] - true_quantiles[i]) for i in range(len(QUANTILES))},
        **{f"floor_q_err_{i}": 100 * abs(floor_quantiles[i] - true_quantiles[i]) for i in range(len(QUANTILES))},
        "template_cover": float(np.mean((low <= truth + TOLERANCE) & (truth - TOLERANCE <= high))),
        "quantile_cover": float(np.mean([q.low - TOLERANCE <= true_quantiles[i] <= q.high + TOLERANCE
                                         for i, q in enumerate(quantiles)])),
        "cells_per_template": subset.computed.sum() / len(matrix.templates),
        "seconds": seconds,
    }


def emit(lines: list[str], out: Path | None) -> None:
    """The markdown table to stdout and, given `out`, to that file, to paste into bench/RESULTS.md."""
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if out:
        out.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="full run directories")
    parser.add_argument("--budgets", default="0.05,0.1,0.25")
    parser.add_argument("--seeds", type=int, default=10, help="design seeds 0..N-1")
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--model", choices=("covariates", "irt"), default="covariates",
                        help="covariates: template tags as covariates; irt: the plain logistic model")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="plug-in",
                        help="plug-in: the penalized fit and a row bootstrap; bayes: posterior draws of the logistic "
                             "model; choices: posterior draws of the option model (harness.analysis.estimators)")
    parser.add_argument("--design", choices=("balanced", "adaptive"), default="balanced",
                        help="which cells a budget computes (harness run --budget-design): the seeded balanced "
                             "design, or a balanced half and the rest by harness.analysis.budget_allocation")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    lines = [f"Command: `.venv/bin/python bench/bench_budget.py {' '.join(sys.argv[1:])}`", "",
             f"Design: {args.design}; estimator: {args.estimator}; model: {args.model}; "
             f"{args.resamples} bootstrap resamples; "
             f"{round(100 * args.confidence)}% intervals; "
             f"design seeds 0..{args.seeds - 1}. Errors in points (0-100): mean over the run's (task, shots), "
             "median over seeds; coverage pooled over tasks and seeds (a value missed by under 0.05 points counts "
             "as held). Quantiles are over each task's templates; in parentheses, the naive estimator (each "
             "template's mean over its computed cells). (task, shots) whose every cell is equal are left out "
             "(\"+N constant\").", "",
             "| run | tasks x templates x rows | budget | cells / template | template MAE (naive) | "
             "q05 | q25 | q50 | q75 | q95 | max quantile MAE (naive) | template coverage | quantile coverage | "
             "floor | s / estimate |",
             "|---|---|---:|---:|---|---|---|---|---|---|---|---:|---:|---:|---:|"]
    started, cpu_started = time.perf_counter(), time.process_time()
    for directory in args.runs:
        run_id, matrices, constant = full_matrices(directory)
        shape = (f"{len(matrices)} x {round(np.mean([len(m.templates) for m in matrices]))} x "
                 f"{round(np.mean([len(m.rows) for m in matrices]))}")
        if constant:
            shape += f" (+{constant} constant)"
        oracles = [oracle_values(m) for m in matrices]
        for budget in budgets:
            per_seed: dict[str, list[float]] = defaultdict(list)
            pooled: dict[str, list[float]] = defaultdict(list)
            for seed in range(args.seeds):
                results = [measure(m, budget, seed, args.model == "covariates", args.resamples, args.confidence, o,
                                   args.estimator, args.design)
                           for m, o in zip(matrices, oracles, strict=True)]
                for key in results[0]:
                    per_seed[key].append(float(np.mean([r[key] for r in results])))
                    pooled[key].extend(r[key] for r in results)
            med = {key: float(np.median(values)) for key, values in per_seed.items()}
            quantile_cells = [f"{med[f'q_err_{i}']:.1f} ({med[f'naive_q_err_{i}']:.1f})" for i in range(len(QUANTILES))]
            worst, worst_naive, floor = (max(med[f"{kind}q_err_{i}"] for i in range(len(QUANTILES)))
                                         for kind in ("", "naive_", "floor_"))
            lines.append(
                f"| {run_id} | {shape} | {budget:.0%} | {med['cells_per_template']:.0f} | "
                f"{med['template_mae']:.1f} ({med['naive_template_mae']:.1f}) | {' | '.join(quantile_cells)} | "
                f"{worst:.1f} ({worst_naive:.1f}) | {np.mean(pooled['template_cover']):.0%} | "
                f"{np.mean(pooled['quantile_cover']):.0%} | {floor:.1f} | {med['seconds']:.2f} |")
    lines += ["", f"Wall time: {time.perf_counter() - started:.0f} s; "
                  f"CPU time: {time.process_time() - cpu_started:.0f} s."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
