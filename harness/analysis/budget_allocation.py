"""Where the second half of an adaptive budget goes: to the templates whose scores decide the
quantiles over templates.

A balanced design (`harness.eval.budget_design`) gives every template the same cells. But each
quantile over templates rests on the few templates ranked near it: the 5% quantile of 48 templates
lies between the third and fourth lowest scores, and a template that is surely far above it, or one
whose every draw already agrees, gains the quantiles nothing from more cells. An adaptive budget
(`harness run --budget F --budget-design adaptive`) computes a balanced first half, draws the
posterior of every template's full-run score from it, and gives each remaining cell to the template
with the most to gain:

- relevance: how often a draw ranks the template near a quantile (a Gaussian kernel of width
  `RANK_WIDTH` ranks around each quantile's position, the largest of the five);
- times its score's posterior variance, divided by its cells plus one (the share of that variance
  one more cell takes away, were the cells alike), updated as each cell is given, so a template
  that keeps winning gets cells at a falling rate.

A cell's row is the template's uncomputed row with the fewest computed cells, ties broken by a
seeded draw, so the rows stay as balanced as the first half left them. The draws are the option
model's where every cell holds its chosen option (`harness.analysis.budget_choices`), else the
logistic sampler's (`harness.analysis.budget_bayes`), as `--estimator choices` picks its sampler,
whichever estimator then reads the run.

The estimators need no change: the second half depends only on the computed cells of the first,
so the design is ignorable in the likelihood, and the posterior of the whole run is the one a fixed
design with the same cells would give (the plug-in's row bootstrap assumes a fixed design, so its
intervals are the rougher guide here). Measured on full runs (bench/RESULTS.md, "Adaptive
budgets"), the same number of cells put where the quantiles need them lowered the option model's
worst quantile error at a tenth of the cells on every run, SmolLM2's CB from 4.4 to 3.3 points and
RTE's first 100 rows from 2.8 to 1.8.
"""

from __future__ import annotations

import numpy as np

from harness.analysis.budget import QUANTILES, choice_scores, option_model_applies, posterior_scores
from harness.analysis.budget_matrix import CellMatrix
from harness.analysis.scores import bootstrap_rng
from harness.eval.budget_design import design_cells
from harness.eval.budget_plan import Budget

RANK_WIDTH = 2.0  # ranks: chosen among 1, 2 and 3 on SmolLM2's CB, COPA and RTE runs (bench/RESULTS.md)
ALLOCATION_DRAWS = 400  # posterior draws the allocation reads; its ranks need no more


def relevance(draws: np.ndarray) -> np.ndarray:
    """Each template's mean over draws (draws x templates) of its closeness in rank to the nearest
    quantile over templates, 1 at a quantile's position."""
    templates = draws.shape[1]
    ranks = np.argsort(np.argsort(draws, axis=1, kind="stable"), axis=1)
    positions = np.asarray(QUANTILES) * (templates - 1)
    closeness = np.exp(-0.5 * ((ranks[:, :, None] - positions) / RANK_WIDTH) ** 2).max(axis=2)
    return closeness.mean(axis=0)


def adaptive_cells(matrix: CellMatrix, extra: int, seed: int) -> list[tuple[str, str]]:
    """`extra` more (template, row) cells for the matrix of a first half, in the order given (see
    the module docstring); fewer where the matrix has fewer uncomputed cells. The same matrix and
    seed give the same cells."""
    label = "budget-allocation"
    sampler = choice_scores if option_model_applies(matrix) else posterior_scores
    draws = sampler(matrix, ALLOCATION_DRAWS, bootstrap_rng(seed, label, matrix.task, matrix.shots))
    rng = bootstrap_rng(seed, label + "-rows", matrix.task, matrix.shots)
    computed = matrix.computed.copy()
    cells = computed.sum(axis=1).astype(float)
    priority = relevance(draws) * draws.var(axis=0)
    picked: list[tuple[str, str]] = []
    for _ in range(min(extra, int((~computed).sum()))):
        gain = np.where(computed.all(axis=1), -np.inf, priority / (cells + 1))
        template = int(np.lexsort((cells, -gain))[0])  # equal gains (all zero, say): the fewest cells first
        free = np.flatnonzero(~computed[template])
        load = computed[:, free].sum(axis=0)
        row = int(rng.choice(free[load == load.min()]))
        computed[template, row] = True
        picked.append((matrix.templates[template], matrix.rows[row]))
        priority[template] *= cells[template] / (cells[template] + 1)
        cells[template] += 1
    return picked


def second_half(matrix: CellMatrix, budget: Budget, seed: int, templates: int, rows: int) -> list[tuple[str, str]]:
    """The cells an adaptive `budget` computes after its balanced first stage, for a (task, shots) of
    `templates` x `rows` cells (the plan's counts) whose matrix holds at least that stage's cells:
    a run folder's, or a full run's in the benchmark. No cells where the budget is too small to split."""
    size = budget.cells_of(templates * rows)
    first = budget.balanced_cells_of(templates, rows)
    if first >= size:
        return []
    # A split first stage touches every template and row (`first_stage_size`), so the matrix has them all.
    stage = matrix.subset(design_cells(matrix.templates, matrix.rows, first, seed))
    return adaptive_cells(stage, size - first, seed)
