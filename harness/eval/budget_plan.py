"""`harness run --budget`: which planned samples a budgeted run computes, and the record of it.

A budget is given per (task, shots): a fraction of its (template, row) cells or a number of them.
The cells are the first ones of the seeded, nested design of `harness.eval.budget_design` (the
run's `--seed` is the design's), so:

- the budget is not part of the run's spec: a budgeted run writes to the folder the full run of the
  same command would, and a later command with a larger budget, or none, resumes it and computes
  only the cells it lacks;
- cells already on disk are kept whatever the budget (a smaller budget never discards work, and a
  full run that was stopped half way is estimated from all it finished);
- the record's `budget` section says, per (task, shots), how many cells the design asked for and
  how many were computed; its scores are means over the computed cells only (their `n` says how
  many), and the estimates of the rest come from `harness.analysis.budget`, marked as estimates
  wherever they are shown.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.eval.budget_design import budget_size, design_cells, first_stage_size
from harness.eval.plan import PlannedSample
from harness.eval.record import BUDGET_DESIGNS, BudgetCells, RunBudget

_FRACTION = re.compile(r"^(0?\.\d+|1\.0*)$")
_PERCENT = re.compile(r"^(\d+(\.\d+)?)%$")
_COUNT = re.compile(r"^[1-9]\d*$")


@dataclass(frozen=True)
class Budget:
    """What `--budget` asked for: `size` is a fraction (float, 0 < f <= 1) or a number of cells (int)
    of each (task, shots); `text` is the flag as given, which the record keeps.

    `design` is balanced (the first `size` cells of the seeded order) or adaptive: the first
    `first_stage_size` cells of that order, plus the cells `extra` names per (task, shots), which
    the command chooses from the first stage's results (`harness.adaptive_run`)."""

    size: float | int
    text: str
    design: str = "balanced"
    extra: Mapping[tuple[str, int], frozenset[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.design not in BUDGET_DESIGNS:
            raise HarnessError(f"--budget-design {self.design!r}: use one of {', '.join(BUDGET_DESIGNS)}")

    @classmethod
    def parse(cls, text: str, design: str = "balanced") -> Budget:
        """`0.1` or `10%` (a tenth of the cells; `1.0` or `100%` all of them) or `500` (a number of cells,
        written without a decimal point); anything else is refused in one line."""
        value = text.strip()
        if (percent := _PERCENT.match(value)) is not None:
            size: float | int = float(percent.group(1)) / 100
        elif _FRACTION.match(value):
            size = float(value)
        elif _COUNT.match(value):
            size = int(value)
        else:
            raise HarnessError(f"--budget {text!r}: give a fraction of each task's cells (0.1 or 10%) or a number "
                               "of cells (500)")
        if isinstance(size, float) and not 0 < size <= 1:
            raise HarnessError(f"--budget {text!r}: a fraction must be above 0 and at most 1 (100%)")
        return cls(size, value, design)

    def cells_of(self, total: int) -> int:
        """The cells this budget asks for of a (task, shots) with `total` cells: a number of cells
        larger than the task has is all of them."""
        return budget_size(min(self.size, total) if isinstance(self.size, int) else self.size, total)

    def balanced_cells_of(self, templates: int, rows: int) -> int:
        """How many of them come from the seeded balanced order: all, or an adaptive budget's first
        stage."""
        size = self.cells_of(templates * rows)
        return first_stage_size(size, templates, rows) if self.design == "adaptive" else size


def budgeted_plan(plan: list[PlannedSample], budget: Budget, seed: int,
                  stored: Collection[str]) -> tuple[list[PlannedSample], RunBudget]:
    """The planned samples a budgeted run computes (in plan order) and its record's `budget` section.

    Per (task, shots): the cells of the design at this budget, plus every planned sample already
    stored. A number of cells larger than a (task, shots) has computes all of its cells."""
    groups: dict[tuple[str, int], list[PlannedSample]] = {}
    for sample in plan:
        groups.setdefault((sample.task.name, sample.shots), []).append(sample)
    keep: set[str] = set()
    cells = []
    for (task, shots), members in groups.items():
        templates = list(dict.fromkeys(s.template.id for s in members))
        rows = list(dict.fromkeys(s.row_id for s in members))
        total = len(templates) * len(rows)
        balanced = budget.balanced_cells_of(len(templates), len(rows))
        design = set(design_cells(templates, rows, balanced, seed)) | budget.extra.get((task, shots), frozenset())
        kept = {s.key for s in members if (s.template.id, s.row_id) in design or s.key in stored}
        keep |= kept
        cells.append(BudgetCells(task=task, shots=shots, templates=len(templates), rows=len(rows),
                                 design=budget.cells_of(total), computed=len(kept)))
    return [s for s in plan if s.key in keep], RunBudget(requested=budget.text, seed=seed, cells=cells,
                                                         design=budget.design)
