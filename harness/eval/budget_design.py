"""Which (template, row) cells a budgeted run computes: a seeded design that is balanced and nested.

A full run computes every (template, row) cell of a (task, shots); a budgeted run computes a
fraction of them and estimates the rest (`harness.analysis.budget`). The design decides which
cells, and three properties make the estimate sound and the runs cheap to extend:

- Balanced: every template gets floor or ceil(B / templates) cells and every row floor or
  ceil(B / rows), so no template's estimate rests on fewer cells than another's, and once B reaches
  the number of rows every row has been seen at least once (its difficulty is then measured, not
  guessed).
- Nested: the cells are one fixed order of all cells and a budget takes its first B, so a run with
  a larger budget contains a smaller one's cells and computes only the missing ones on resume.
- Deterministic: the order depends only on the seed and the sorted template and row ids (a numpy
  generator, never Python's salted hash), so every process plans the same cells.

The order: templates and rows are each put in a seeded random order; cell k belongs to template
k mod T and row (k + b) mod R of block b = k div lcm(T, R). Within a block the rows run cyclically,
each template taking the next row, so every prefix is balanced over templates and over rows; the
shift by b between blocks makes the map from k to (template, row) one to one when T and R share a
factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

from harness.errors import HarnessError


def budget_size(budget: float | int, cells: int) -> int:
    """The number of cells a budget stands for: a float is a fraction of all cells (0 < f <= 1,
    rounded up, so 10% never computes fewer than a tenth), an int a number of cells."""
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise HarnessError(f"--budget must be a fraction (0 < f <= 1) or a number of cells, got {budget!r}")
    if isinstance(budget, Integral):
        if not 1 <= budget <= cells:
            raise HarnessError(f"--budget {budget} cells is outside 1..{cells} (the cells of the task); "
                               "give a number in that range or a fraction such as 0.1")
        return int(budget)
    if not 0 < budget <= 1:
        raise HarnessError(f"--budget {budget} as a fraction must be in (0, 1]; give e.g. 0.1 for 10% of the cells")
    # The small tolerance keeps 0.1 * 4330 (433.00000000000006 in floating point) at 433.
    return max(1, min(cells, math.ceil(budget * cells - 1e-9)))


def _orders(templates: Sequence[str], rows: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise HarnessError(f"the budget design's seed must be a non-negative integer, got {seed!r}")
    for name, ids in (("template", templates), ("row", rows)):
        if not ids:
            raise HarnessError(f"the budget design needs at least one {name}")
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if list(ids).count(i) > 1)
            raise HarnessError(f"the budget design got {name} id {duplicate!r} twice; ids must be unique")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB0D6E7]))
    ordered_templates = sorted(templates)
    ordered_rows = sorted(rows)
    template_order = [ordered_templates[i] for i in rng.permutation(len(ordered_templates))]
    row_order = [ordered_rows[i] for i in rng.permutation(len(ordered_rows))]
    return template_order, row_order


def design_order(templates: Sequence[str], rows: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """Every (template, row) cell once, in the order budgets take them (see the module docstring)."""
    template_order, row_order = _orders(templates, rows, seed)
    count_t, count_r = len(template_order), len(row_order)
    block = math.lcm(count_t, count_r)
    k = np.arange(count_t * count_r)
    template_index = k % count_t
    row_index = (k + k // block) % count_r
    return [(template_order[t], row_order[r]) for t, r in zip(template_index.tolist(), row_index.tolist(),
                                                               strict=True)]


def design_cells(templates: Sequence[str], rows: Sequence[str], budget: float | int,
                 seed: int) -> list[tuple[str, str]]:
    """The cells a run with this budget computes: the first `budget_size` cells of `design_order`."""
    order = design_order(templates, rows, seed)
    return order[:budget_size(budget, len(order))]


def first_stage_size(size: int, templates: int, rows: int) -> int:
    """The balanced cells an adaptive budget of `size` cells computes before it looks at any: half,
    or, where the budget allows, enough for every template and every row to have a cell, so the
    allocation of the rest (`harness.analysis.budget_allocation`) knows every row's difficulty."""
    return min(size, max(math.ceil(size / 2), templates, rows))
