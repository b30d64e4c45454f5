"""How small a budgeted estimate's error can be at all: the Bayes risk of a budget's cells on worlds
drawn from the option model fitted to a full run, beside the shipped estimator's error there.

A budgeted estimate errs for two reasons: what the computed cells cannot tell about the others, and
what the estimator makes of them. `bench_budget.py` measures the sum on real runs. This separates
the first. For each FULL run's (task, shots), the option model (`harness.analysis.budget_choices`)
is fitted to every cell, and its hyperparameters (spreads, global reading and lean, the share of
row-independent formats and their patterns) are fixed at their posterior means. Worlds are then
drawn from that prior, with the run's formats, families, rows and gold-option shares: new family and
format effects, row pulls, gold options, kinds, and every cell's choice. Each world is budgeted with
the balanced design (`--design adaptive`: the adaptive one, as in `bench_budget.py`; design seed =
the world's index), and two estimates are made from its cells:

- best possible: the exact posterior under the prior the world was drawn from, each quantile its
  posterior median. On such worlds no estimator whatever, given the same cells, has a smaller
  expected absolute error of that quantile: what remains is what the cells cannot tell;
- shipped: `estimate_budget(..., estimator="choices")`, which learns the hyperparameters from the
  cells, as a budgeted run does.

Columns: the mean over worlds of each quantile's absolute error (5/25/50/75/95, points), the worst
of the five with its standard error, and the worst of the medians over worlds, which is how
`bench_budget.py` summarizes its design seeds. The bound is for the design's cells: another design
could do better. The adaptive design's choice of cells depends on computed cells only, so the
posterior is exact for it as well. It says nothing of the real runs' formats beyond their fitted
model.

    .venv/bin/python bench/bench_budget_bound.py RUN_DIR [RUN_DIR ...] --worlds 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_budget import QUANTILE_COLUMNS, budget_cells, emit, full_matrices  # noqa: E402

from harness.analysis.budget import QUANTILES, estimate_budget, option_model_applies, score_summary  # noqa: E402
from harness.analysis.budget_choices import KnownPrior, draw_world, fit_prior, score_draws  # noqa: E402
from harness.analysis.budget_matrix import CellMatrix  # noqa: E402


def world_errors(world: CellMatrix, prior: KnownPrior, budget: float, seed: int, design: str, draws: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(best possible, shipped): each quantile's absolute error, in points, at this world's budget."""
    truth = score_summary(world.sums.mean(axis=1))[QUANTILE_COLUMNS]
    subset = world.subset(budget_cells(world, budget, seed, design))
    posterior = score_draws(subset, draws, rng, known=prior)
    best = np.median(score_summary(posterior)[:, QUANTILE_COLUMNS], axis=0)
    shipped = estimate_budget(subset, seed=seed, resamples=20, estimator="choices")
    quantiles = np.array([q.value for _, q in shipped.distribution.quantiles])
    return 100 * np.abs(best - truth), 100 * np.abs(quantiles - truth)


def error_cells(errors: np.ndarray) -> str:
    """A table row's error columns from (worlds x quantiles) errors."""
    mean = errors.mean(axis=0)
    worst = int(mean.argmax())
    error = errors[:, worst].std(ddof=1) / np.sqrt(len(errors))
    return (f"{' | '.join(f'{m:.1f}' for m in mean)} | {mean[worst]:.1f} ± {error:.1f} | "
            f"{np.median(errors, axis=0).max():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="full run directories of choice tasks")
    parser.add_argument("--budgets", default="0.1")
    parser.add_argument("--design", choices=("balanced", "adaptive"), default="balanced",
                        help="which cells a world's budget computes, as in bench_budget.py")
    parser.add_argument("--worlds", type=int, default=100, help="worlds drawn per (task, shots) and budget")
    parser.add_argument("--draws", type=int, default=400, help="kept sweeps of the known-prior posterior")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit and the worlds")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    quantiles = " | ".join(f"q{round(100 * q):02d}" for q in QUANTILES)
    lines = [f"Command: `.venv/bin/python bench/bench_budget_bound.py {' '.join(sys.argv[1:])}`", "",
             f"{args.worlds} worlds per (task, shots) and budget, {args.design} design; errors in points (0-100), "
             "mean over worlds, then the worst quantile's mean ± its standard error, and the worst quantile's "
             "median over worlds.", "",
             f"| run | task | formats x rows | budget | cells / format | estimate | {quantiles} | "
             "worst quantile, mean | worst quantile, median |",
             "|---|---|---|---:|---:|---|" + "---:|" * (len(QUANTILES) + 2)]
    started = time.perf_counter()
    for directory in args.runs:
        run_id, matrices, _ = full_matrices(directory)
        for matrix in matrices:
            if not option_model_applies(matrix):
                raise SystemExit(f"{directory}: task {matrix.task!r} ({matrix.shots}-shot) holds no chosen options; "
                                 "give a run of choice tasks")
            rng = np.random.default_rng([args.seed, matrix.shots])
            prior = fit_prior(matrix, rng)
            for budget in budgets:
                best, shipped = [], []
                for world_index in range(args.worlds):
                    world = draw_world(matrix, prior, rng)
                    errors = world_errors(world, prior, budget, world_index, args.design, args.draws, rng)
                    best.append(errors[0])
                    shipped.append(errors[1])
                cells = len(budget_cells(matrix, budget, 0, "balanced")) / len(matrix.templates)
                head = (f"| {run_id} | {matrix.task} | {len(matrix.templates)} x {len(matrix.rows)} | {budget:.0%} | "
                        f"{cells:.0f}")
                lines.append(f"{head} | best possible | {error_cells(np.array(best))} |")
                lines.append(f"{head} | shipped | {error_cells(np.array(shipped))} |")
    lines += ["", f"Wall time: {time.perf_counter() - started:.0f} s."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
