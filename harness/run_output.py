"""What `harness run` prints once a model's run is recorded: its scores, how they spread over
templates, the seen/held-out and zero/few-shot tables, and, with several models, each later one
against the first.

A budgeted run (`--budget`) computed only some cells: its score table holds means over the computed
cells, and the spread over templates is the estimate of `harness.analysis.budget` (each template's
full-run score, the quantiles over templates, with intervals), printed as an estimate, in place of
the spread of the computed means.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.analysis.scores import template_sensitivity
from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.report.terminal import budget_table, group_table, score_table, sensitivity_table


def print_run(directory: Path, record: RunRecord, seed: int, console: Console, estimator: str = "plug-in") -> None:
    """Every table of one model's run, then where its record is. The samples are read (and checked)
    once, and only for the tables that need them."""
    from harness.eval.store import load_run

    samples = load_run(directory)[1] if record.budget is not None or record.labelled else []
    console.print(score_table(record))
    if record.budget is not None:
        _print_budget(record, samples, seed, console, estimator)
    else:
        sensitivity = [row for row in template_sensitivity(record) if row["templates"] > 1]
        if sensitivity:
            console.print(sensitivity_table(sensitivity))
    if any(score.group is not None for score in record.scores):
        console.print(group_table(record))
    _print_generalization(record, samples, seed, console)
    console.print(f"run record: [bold]{escape(str(directory))}[/]")


def _print_budget(record: RunRecord, samples: list[Sample], seed: int, console: Console, estimator: str) -> None:
    """The estimated spread over templates of each (task, shots) with two templates or more, by `estimator`
    (`harness.analysis.estimators.ESTIMATORS`)."""
    from harness.analysis.budget import estimate_budget
    from harness.analysis.budget_matrix import run_matrices

    estimates = [estimate_budget(matrix, seed=seed, estimator=estimator)
                 for matrix in run_matrices(record, samples).values() if len(matrix.templates) > 1]
    computed = sum(cells.computed for cells in record.budget.cells)
    total = sum(cells.cells for cells in record.budget.cells)
    design = " (adaptive design)" if record.budget.design == "adaptive" else ""
    console.print(f"budget {record.budget.requested}{design}: {computed} of {total} cells computed; the scores above "
                  "are means over the computed cells only", markup=False, highlight=False)
    if estimates:
        console.print(budget_table(estimates))


def print_tuned_against_base(directories: list[Path], seed: int, console: Console) -> None:
    """With several models, each later one that has seen/held-out labels against the first, by label."""
    from harness.analysis.compare import compare_by_seen_status, run_label
    from harness.eval.store import load_run
    from harness.report.terminal import generalization_table

    runs = [load_run(directory) for directory in directories]
    for (record, samples), directory in zip(runs[1:], directories[1:], strict=True):
        if record.labelled:
            labels = (run_label(runs[0][0], directories[0].name), run_label(record, directory.name))
            try:
                rows = compare_by_seen_status(runs[0], (record, samples), seed=seed, labels=labels)
            except HarnessError as exc:  # e.g. no shared samples: the runs themselves are saved and fine
                console.print(f"[dim]no generalization table: {escape(str(exc))}[/]", highlight=False)
                continue
            console.print(generalization_table(rows, *labels, confidence=0.95))


def _print_generalization(record: RunRecord, samples: list[Sample], seed: int, console: Console) -> None:
    """The seen/held-out and zero/few-shot tables, each only when the run has something to show in it
    (`samples`: the run's, needed only when its scores are labelled seen or held out)."""
    from harness.analysis.scores import cluster_scores, generalization_gap, shots_curve
    from harness.report.terminal import gap_table, seen_cluster_table, shots_table

    if record.labelled:
        console.print(seen_cluster_table(cluster_scores(record, samples, seed=seed), confidence=0.95))
    gap = [row for row in generalization_gap(record) if row["gap"] is not None]
    if gap:
        console.print(gap_table(gap))
    if len(record.shot_counts) > 1:
        console.print(shots_table(shots_curve(record)))
