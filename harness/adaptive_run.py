"""`harness run --budget F --budget-design adaptive`: a balanced first half, then the rest of the
budget where the quantiles over templates need it.

The run is two runs of the same spec into the same folder. The first computes the first
`first_stage_size` cells of the seeded balanced design; the allocation
(`harness.analysis.budget_allocation`) reads those cells, and only those, and names the rest; the
second extends the first with them. Because the allocation sees the first stage's cells alone, the
same command always names the same cells: a run stopped in either stage resumes where it stopped,
and run again it computes nothing. Cells on disk from other budgets are kept, as a balanced budget
keeps them. Planning and inference live in `harness.eval`, the allocation in `harness.analysis`:
this module, above both, is where one feeds the other.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.eval.budget_plan import Budget
from harness.eval.distributed import Group
from harness.eval.record import RunRecord
from harness.eval.run import run


def run_budgeted(*args: Any, budget: Budget | None, group: Group | None = None, overwrite: bool = False,
                 **options: Any) -> tuple[Path, RunRecord]:
    """`harness.eval.run.run` with a budget of either design; `args` and `options` are run's (an
    adaptive second stage never overwrites the first it extends)."""
    directory, record = run(*args, budget=budget, group=group, overwrite=overwrite, **options)
    if budget is None or budget.design != "adaptive":
        return directory, record
    extra = group.broadcast(lambda: allocation(directory, record)) if group else allocation(directory, record)
    return run(*args, budget=replace(budget, extra=extra), group=group, overwrite=False,
               **{**options, "reuse_complete": True})


def allocation(directory: Path, record: RunRecord) -> dict[tuple[str, int], frozenset[tuple[str, str]]]:
    """(task, shots) -> the cells of the adaptive second stage, from the first stage's cells in the
    run folder (see the module docstring)."""
    from harness.analysis.budget_allocation import adaptive_cells
    from harness.analysis.budget_matrix import run_matrices
    from harness.eval.budget_design import design_cells, first_stage_size
    from harness.eval.store import load_run

    assert record.budget is not None
    matrices = run_matrices(record, load_run(directory)[1])
    extra = {}
    for cells in record.budget.cells:
        first = first_stage_size(cells.design, cells.templates, cells.rows)
        if first >= cells.design:
            continue  # the budget is too small to be split: all of it was the balanced stage
        matrix = matrices[(cells.task, cells.shots)]
        stage = matrix.subset(design_cells(matrix.templates, matrix.rows, first, record.budget.seed))
        extra[(cells.task, cells.shots)] = frozenset(adaptive_cells(stage, cells.design - first, record.budget.seed))
    return extra
