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

from harness.engine.base import Backend
from harness.eval.budget_plan import Budget
from harness.eval.config import RunConfig
from harness.eval.distributed import Group
from harness.eval.record import RunRecord
from harness.eval.run import run
from harness.tasks.registry import Registry


def run_budgeted(config: RunConfig, backend: Backend, registry: Registry, out: Path, *, budget: Budget | None,
                 group: Group | None = None, overwrite: bool = False, **options: Any) -> tuple[Path, RunRecord]:
    """`harness.eval.run.run` with a budget of either design; `options` are run's. An adaptive
    second stage never overwrites the first it extends, and a folder whose run already has every
    cell is returned as it is."""
    directory, record = run(config, backend, registry, out, budget=budget, group=group, overwrite=overwrite,
                            **options)
    if budget is None or budget.design != "adaptive" or record.budget is None:
        return directory, record

    def allocate() -> dict[tuple[str, int], frozenset[tuple[str, str]]]:
        return allocation(directory, record, budget, config.seed)

    extra = group.broadcast(allocate) if group else allocate()
    return run(config, backend, registry, out, budget=replace(budget, extra=extra), group=group, overwrite=False,
               **{**options, "reuse_complete": True})


def allocation(directory: Path, record: RunRecord, budget: Budget,
               seed: int) -> dict[tuple[str, int], frozenset[tuple[str, str]]]:
    """(task, shots) -> the cells of the adaptive second stage of `budget`, from its first stage's
    cells in the run folder (see the module docstring). The sizes are the budget's, not the
    record's: a folder may hold the record of another budget whose cells cover this one's."""
    from harness.analysis.budget_allocation import second_half
    from harness.analysis.budget_matrix import run_matrices
    from harness.eval.store import load_run

    assert record.budget is not None
    matrices = run_matrices(record, load_run(directory)[1])
    return {(cells.task, cells.shots): frozenset(second_half(matrices[(cells.task, cells.shots)], budget, seed,
                                                             cells.templates, cells.rows))
            for cells in record.budget.cells}
