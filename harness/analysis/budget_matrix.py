"""A (task, shots)'s samples as a templates x rows matrix of cells, computed or not, for the budget
estimator.

A budgeted run computes some (template, row) cells of each (task, shots) and leaves the rest to
the estimator (`harness.analysis.budget`), which needs every template and every row the full run
would have, including those no computed cell touches. The templates come from the record's scores
and the samples; the rows from the samples, or from the caller (the planner knows the rows of a
budget too small to touch every one).

A cell holds the sum and the number of its judgements, as the record's means are built: a sample
with one value is one judgement, an IFEval sample one per instruction (see `harness.metrics.flatten`),
so a template's mean over the computed cells of a full run is exactly the record's mean.

A row of a choice task also has a class, its gold option (`Sample.answer_index`), which does not
depend on the template: known from any computed sample of the row, it lets the estimator tell a
template that always answers one option from one that reads the rows. Where the metric picks one
option (acc, acc_norm: `harness.metrics.choice_rule`) and every row has as many options, a cell
also holds the option it chose, which the option model (`harness.analysis.budget_choices`) reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.irt import Cells
from harness.analysis.scores import Samples, check_samples, task_metrics, value_sum_count
from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.metrics import choice_rule


@dataclass(frozen=True)
class CellMatrix:
    """Every (template, row) cell of one (task, shots): `sums` and `counts` of the judgements of the
    computed cells (templates x rows, zero elsewhere), `computed` which cells a sample exists for,
    each template's tags (the record's `template_tags`), and each row's gold option index
    (`row_classes`; -1 where no computed sample of the row says, as for every row of a generation
    task; None is read as all -1). `choices`, where the metric picks one of `options` options on
    every row, is the option each computed cell chose (-1 elsewhere); None otherwise."""

    task: str
    shots: int
    metric: str
    templates: tuple[str, ...]
    rows: tuple[str, ...]
    tags: tuple[Mapping[str, Any], ...]
    sums: np.ndarray
    counts: np.ndarray
    computed: np.ndarray
    row_classes: np.ndarray | None = None
    choices: np.ndarray | None = None
    options: int = 0

    def __post_init__(self) -> None:
        if self.row_classes is None:
            object.__setattr__(self, "row_classes", np.full(len(self.rows), -1, dtype=np.int64))
        if np.shape(self.row_classes) != (len(self.rows),):
            raise HarnessError(f"task {self.task!r} ({self.shots}-shot) has {np.size(self.row_classes)} row classes "
                               f"for {len(self.rows)} rows; give one class (or -1) per row")
        if self.choices is not None and (np.shape(self.choices) != self.computed.shape or self.options < 2):
            raise HarnessError(f"task {self.task!r} ({self.shots}-shot) has choices of shape {np.shape(self.choices)} "
                               f"over {self.options} options for {self.computed.shape} cells; give one choice a "
                               "cell and at least two options")

    def cells(self) -> Cells:
        """The computed cells that hold a judgement, as the model fits them, with the classes
        renumbered over those present; fewer than two classes is no class term."""
        template, row = np.nonzero(self.computed & (self.counts > 0))
        counts = self.counts[template, row]
        present, numbered = np.unique(self.row_classes, return_inverse=True)
        known = present >= 0
        row_class = np.where(self.row_classes >= 0, numbered - (~known).sum(), -1)
        if known.sum() < 2:
            row_class = np.full(len(self.rows), -1)
        return Cells(template, row, self.sums[template, row] / counts, counts, len(self.templates), len(self.rows),
                     row_class, int(known.sum()) if known.sum() >= 2 else 0)

    def row_weights(self) -> np.ndarray:
        """Each row's number of judgements: what an uncomputed cell of the row weighs in its
        template's mean (the mean over the row's computed cells; 1 for a row none computed)."""
        seen = (self.computed & (self.counts > 0)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = self.counts.sum(axis=0) / seen
        return np.where(seen > 0, weights, 1.0)

    def subset(self, cells: Collection[tuple[str, str]]) -> CellMatrix:
        """The matrix with only `cells` (template, row) computed: what a budgeted run whose design
        picked them would have, since a cell's value does not depend on which others are computed."""
        template_index = {t: i for i, t in enumerate(self.templates)}
        row_index = {r: i for i, r in enumerate(self.rows)}
        keep = np.zeros_like(self.computed)
        for template, row in cells:
            if template not in template_index or row not in row_index:
                raise HarnessError(f"task {self.task!r} ({self.shots}-shot) has no cell ({template!r}, {row!r}); "
                                   "the design was made for other templates or rows")
            keep[template_index[template], row_index[row]] = True
        missing = keep & ~self.computed
        if missing.any():
            t, r = (int(i[0]) for i in np.nonzero(missing))
            raise HarnessError(f"task {self.task!r} ({self.shots}-shot) cell ({self.templates[t]!r}, {self.rows[r]!r}) "
                               "was not computed in this run; subset a full run")
        # A row's class is known only through a computed sample of it.
        classes = np.where(keep.any(axis=0), self.row_classes, -1)
        choices = None if self.choices is None else np.where(keep, self.choices, -1)
        return CellMatrix(self.task, self.shots, self.metric, self.templates, self.rows, self.tags,
                          np.where(keep, self.sums, 0.0), np.where(keep, self.counts, 0.0), keep, classes,
                          choices, self.options)


def cell_matrix(task: str, shots: int, metric: str, samples: Sequence[Sample], templates: Sequence[str],
                rows: Sequence[str], tags: Mapping[str, Mapping[str, Any]]) -> CellMatrix:
    """The matrix of one (task, shots) from its samples, over the given templates and rows (in the
    order given; a sample outside them is refused, as is one cell sampled twice, and two samples of
    a row that disagree on its gold option)."""
    template_index = {t: i for i, t in enumerate(templates)}
    row_index = {r: i for i, r in enumerate(rows)}
    sums = np.zeros((len(templates), len(rows)))
    counts = np.zeros_like(sums)
    computed = np.zeros(sums.shape, dtype=bool)
    classes = np.full(len(rows), -1, dtype=np.int64)
    rule = choice_rule(metric)
    choices = np.full(sums.shape, -1, dtype=np.int64)
    option_counts = set()
    for sample in samples:
        if sample.template not in template_index or sample.row_id not in row_index:
            raise HarnessError(f"sample {sample.key!r} is outside the templates and rows of task {task!r}; "
                               "pass every template and row of the task")
        if metric not in sample.metrics:
            raise HarnessError(f"sample {sample.key!r} has no value for metric {metric!r}, which its run's scores "
                               f"rank task {task!r} by; the samples and run.json come from different runs")
        t, r = template_index[sample.template], row_index[sample.row_id]
        if computed[t, r]:
            raise HarnessError(f"sample {sample.key!r} appears twice (or with two template hashes) in the samples")
        if sample.answer_index is not None:
            if classes[r] not in (-1, sample.answer_index):
                raise HarnessError(f"sample {sample.key!r} has gold option {sample.answer_index}, another template "
                                   f"of row {sample.row_id!r} has {classes[r]}; the samples come from different runs")
            classes[r] = sample.answer_index
        total, count = value_sum_count(sample.metrics[metric])
        sums[t, r], counts[t, r], computed[t, r] = total, count, True
        if rule is not None and sample.logprobs is not None and sample.options is not None:
            choices[t, r] = rule(sample.logprobs, sample.options)
            option_counts.add(len(sample.options))
    # The option model needs every computed cell's choice, each row with as many options.
    chosen = len(option_counts) == 1 and bool(np.all(choices[computed] >= 0))
    return CellMatrix(task, shots, metric, tuple(templates), tuple(rows),
                      tuple(tags.get(t, {}) for t in templates), sums, counts, computed, classes,
                      choices if chosen else None, option_counts.pop() if chosen else 0)


def run_matrices(record: RunRecord, samples: Samples,
                 rows: Mapping[str, Sequence[str]] | None = None) -> dict[tuple[str, int], CellMatrix]:
    """(task, shots) -> its matrix, for every (task, shots) of a run. Templates are the record's and
    the samples' (sorted); rows are `rows[task]` where given, else every row the task's samples name
    (sorted), which is every row of a full run."""
    metrics = task_metrics(record)
    tags: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for score in record.ungrouped():
        tags[(score.task, score.shots)][score.template] = score.template_tags
    by_task: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    for sample in check_samples(record.run_id, samples):
        if sample.task not in metrics:
            raise HarnessError(f"task {sample.task!r} has samples but no score in the run record; "
                               "the samples and run.json come from different runs")
        by_task[(sample.task, sample.shots)].append(sample)
    matrices = {}
    for key in sorted(set(by_task) | set(tags)):
        task, shots = key
        group = by_task.get(key, [])
        templates = sorted(set(tags[key]) | {s.template for s in group})
        task_rows = list(rows[task]) if rows is not None and task in rows else sorted({s.row_id for s in group})
        if not task_rows:
            raise HarnessError(f"task {task!r} ({shots}-shot) has no samples; pass its rows to estimate it")
        matrices[key] = cell_matrix(task, shots, metrics[task], group, templates, task_rows, tags[key])
    return matrices
