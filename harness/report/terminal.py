"""Terminal tables (rich) built from run records; the CLI decides where they are printed.

Rich reads a string cell or title as markup, so every name a user controls (cluster, run id, model,
path, a data value a report groups by) goes through `_t`, which escapes it: a cluster called
"[/x]" would otherwise raise MarkupError and one called "[red]mine[/]" would lose its brackets.
Numbers are written by `harness.report.formats`, as on the HTML page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.eval.record import MetricScore, RunRecord, ScoreEntry
from harness.report.formats import interval, pct, signed, span
from harness.tasks.schema import Task


def _t(value: Any) -> str:
    """A user's text as a table cell or title: shown as written, never read as markup."""
    return escape(str(value))


def _cell(metric: MetricScore) -> str:
    return f"{pct(metric.mean)} ± {pct(metric.stderr)}"


def score_table(record: RunRecord) -> Table:
    """Per (task, template), a line for each of its metrics (the primary one first), one column per
    shot count: mean ± stderr (%). Every metric is shown: NIv2's ROUGE-L beside its exact match, an
    extraction task's F1 beside exact match, acc_norm beside acc, as the JSON has them."""
    shots = record.shot_counts
    budgeted = "  budgeted: means over the computed cells only, n per template in run.json" if record.budget else ""
    table = Table(title=_t(f"{record.run_id}  ({record.spec.model_name}){budgeted}"), title_justify="left")
    labelled = record.labelled  # from the model's training manifest or `--seen`
    for column in ("cluster", "task", "template", *(["seen"] if labelled else []), "metric"):
        table.add_column(column)
    for k in shots:
        table.add_column(f"{k}-shot", justify="right")
    rows: dict[tuple[str, str, str], dict[int, ScoreEntry]] = defaultdict(dict)
    for score in record.ungrouped():
        rows[(score.cluster, score.task, score.template)][score.shots] = score
    for (cluster, task, template), by_shots in sorted(rows.items()):
        first = next(iter(by_shots.values()))
        seen = [(first.seen_status or "").replace("_", " ")] if labelled else []
        names = dict.fromkeys([first.primary, *sorted(m for s in by_shots.values() for m in s.metrics)])
        for metric in names:
            cells = [_cell(by_shots[k].metrics[metric]) if k in by_shots and metric in by_shots[k].metrics else ""
                     for k in shots]
            table.add_row(_t(cluster), _t(task), _t(template), *seen, _t(metric), *cells)
    return table


def group_table(record: RunRecord) -> Table:
    """Per task and `report_by` value (an NIv2 category, say): each metric's mean over templates (%)."""
    grouped = [s for s in record.scores if s.group is not None]
    metric_names = list(dict.fromkeys(m for s in grouped for m in s.metrics))
    table = Table(title="by group (mean over templates, %)", title_justify="left")
    for column in ("task", "field", "value", "shots", "n"):
        table.add_column(column, justify="right" if column in ("shots", "n") else "left")
    for name in metric_names:
        table.add_column(_t(name), justify="right")
    cells: dict[tuple[str, str, str, int], list[ScoreEntry]] = defaultdict(list)
    for score in grouped:
        cells[(score.task, score.group.field, score.group.value, score.shots)].append(score)
    for (task, field, value, shots), scores in sorted(cells.items()):
        means = [
            pct(sum(s.metrics[m].mean for s in scores) / len(scores)) if m in scores[0].metrics
            else "" for m in metric_names
        ]
        table.add_row(_t(task), _t(field), _t(value), str(shots), str(scores[0].n), *means)
    return table


def cluster_table(records: list[RunRecord]) -> Table:
    """Per cluster and shot count: the mean over tasks and templates of each task's primary metric."""
    table = Table(title="per-cluster score (primary metric, mean over tasks and templates, %)", title_justify="left")
    table.add_column("cluster")
    table.add_column("shots", justify="right")
    for record in records:
        table.add_column(_t(record.run_id), justify="right")
    cells: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for position, record in enumerate(records):
        for score in record.ungrouped():
            cells[(score.cluster, score.shots)][position].append(score.metrics[score.primary].mean)
    for (cluster, shots), by_run in sorted(cells.items()):
        values = [by_run.get(i) for i in range(len(records))]
        table.add_row(_t(cluster), str(shots), *(pct(sum(v) / len(v)) if v else "-" for v in values))
    return table


def task_list_table(clusters: dict[str, list[Task]]) -> Table:
    table = Table(title="tasks by cluster", title_justify="left")
    for column in ("cluster", "task", "kind", "templates", "metrics", "data"):
        table.add_column(column, justify="right" if column == "templates" else "left")
    for cluster, tasks in clusters.items():
        for task in tasks:
            source = "built-in" if task.data.generator else "files" if task.data.files else "hub"
            table.add_row(_t(cluster), _t(task.name), _t(task.kind), str(len(task.templates)),
                          _t(", ".join(task.metrics)), source)
    return table


def sensitivity_table(rows: list[dict[str, Any]]) -> Table:
    """Template sensitivity per task and shot count, as T0 reports it (percent)."""
    table = Table(title="template sensitivity (primary metric across templates, %)", title_justify="left")
    for column in ("task", "shots", "templates", "median", "IQR", "min-max", "best", "worst"):
        table.add_column(column, justify="right" if column in ("shots", "templates", "median") else "left")
    for row in rows:
        table.add_row(
            _t(row["task"]), str(row["shots"]), str(row["templates"]), pct(row["median"]),
            span(row["q1"], row["q3"], "-"), span(row["min"], row["max"], "-"),
            _t(row["best_template"] or "-"), _t(row["worst_template"] or "-"),
        )
    return table


def budget_table(estimates: Sequence[Any]) -> Table:
    """A budgeted run's spread over templates per (task, shots), a line per statistic:
    `harness.analysis.budget`'s estimates (`BudgetEstimate`) of the full run's mean over templates,
    its quantiles, and the best and worst template, each with its interval (percent)."""
    confidence = round(100 * estimates[0].confidence)
    table = Table(title=f"spread over templates, ESTIMATED from the computed cells (primary metric, %, "
                        f"{confidence}% intervals)", title_justify="left")
    for column in ("task", "shots", "templates", "cells computed", "statistic", "estimate", "interval", "template"):
        table.add_column(column, justify="right" if column in ("shots", "templates", "estimate") else "left")
    for item in estimates:
        spread = item.distribution
        lines = [("mean", spread.mean, ""), *((f"q{round(100 * q):02d}", value, "") for q, value in spread.quantiles),
                 ("best", spread.best, spread.best_template), ("worst", spread.worst, spread.worst_template)]
        heading = (_t(item.task), str(item.shots), str(len(item.templates)), f"{item.computed} of {item.cells}")
        for index, (name, value, template) in enumerate(lines):
            table.add_row(*(heading if index == 0 else ("",) * len(heading)), name, pct(value.value),
                          interval(value.low, value.high), _t(template), end_section=index == len(lines) - 1)
    return table


def _label(status: str | None) -> str:
    return status.replace("_", " ") if status else "-"


def _interval(row: dict[str, Any]) -> str:
    return f"{pct(row['mean'])} {interval(row['low'], row['high'])}"


def seen_cluster_table(rows: list[dict[str, Any]], confidence: float) -> Table:
    """`analysis.cluster_scores`: per cluster, shot count and seen/held-out label, mean [interval] (%)."""
    table = Table(title=f"per-cluster score by seen/held-out (primary metric, mean over tasks and templates, "
                        f"{100 * confidence:g}% bootstrap interval, %)", title_justify="left")
    for column in ("cluster", "shots", "seen", "metric", "tasks", "samples", "score"):
        table.add_column(column, justify="right" if column in ("shots", "tasks", "samples", "score") else "left")
    for row in rows:
        table.add_row(_t(row["cluster"]), str(row["shots"]), _label(row["seen_status"]), _t(row["metric"]),
                      str(row["tasks"]), str(row["samples"]), _interval(row))
    return table


def gap_table(rows: list[dict[str, Any]]) -> Table:
    """`analysis.generalization_gap`: per shot count, the mean under each label and seen minus held-out (%)."""
    table = Table(title="generalization gap (mean primary metric of (task, template) scores per label, %)",
                  title_justify="left")
    labels = ("seen", "held_out_template", "held_out_task", "held_out_cluster")
    for column in ("shots", *(_label(label) for label in labels), "gap"):
        table.add_column(column, justify="right")
    for row in rows:
        cells = [pct(row[label], missing="-") for label in labels]
        gap = signed(row["gap"], missing="-")
        table.add_row(str(row["shots"]), *cells, gap)
    return table


def shots_table(rows: list[dict[str, Any]]) -> Table:
    """`analysis.shots_curve`: one line per task (and "(all)"), one column per shot count (%)."""
    shots = sorted({row["shots"] for row in rows})
    table = Table(title="zero- vs few-shot (primary metric, mean over templates, %)", title_justify="left")
    for column in ("cluster", "task", "metric"):
        table.add_column(column)
    for k in shots:
        table.add_column(f"{k}-shot", justify="right")
    lines: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for row in rows:
        lines[(row["cluster"], row["task"], row["metric"])][row["shots"]] = row["mean"]
    for (cluster, task, metric), means in lines.items():
        table.add_row(_t(cluster), _t(task), _t(metric), *(pct(means[k]) if k in means else "" for k in shots))
    return table


def _delta(row: dict[str, Any]) -> Text:
    """b - a with its interval, in points; significant ones (interval excludes 0) bold, coloured and starred."""
    text = f"{signed(row['delta'])} {interval(row['low'], row['high'], '+')}"
    if not row["significant"]:
        return Text(text)
    return Text(f"{text} *", style="bold green" if row["delta"] > 0 else "bold red")


def comparison_table(comparison: dict[str, Any]) -> Table:
    """`compare.compare_runs`: overall and per-cluster scores of both runs and the delta (%)."""
    runs = f"A = {_t(comparison['a'])}, B = {_t(comparison['b'])}"
    table = Table(title=f"{runs}: per cluster (primary metric, mean over tasks, %; delta = B - A "
                        f"[{100 * comparison['confidence']:g}% paired bootstrap interval], * the interval excludes 0)",
                  title_justify="left")
    _comparison_columns(table, "cluster")
    overall = comparison["overall"]
    table.add_row("(overall)", ",".join(str(k) for k in overall["shots"]), *_comparison_cells(overall),
                  end_section=True)
    for row in comparison["clusters"]:
        table.add_row(_t(row["cluster"]), str(row["shots"]), *_comparison_cells(row))
    return table


def comparison_task_table(comparison: dict[str, Any]) -> Table:
    """`compare.compare_runs`: per task and shot count, both runs' scores and the delta (%)."""
    runs = f"A = {_t(comparison['a'])}, B = {_t(comparison['b'])}"
    table = Table(title=f"{runs}: per task (primary metric, mean over templates, %)", title_justify="left")
    _comparison_columns(table, "cluster", "task")
    for row in comparison["tasks"]:
        table.add_row(_t(row["cluster"]), _t(row["task"]), str(row["shots"]), *_comparison_cells(row))
    return table


def _comparison_columns(table: Table, *names: str) -> None:
    for name in names:
        table.add_column(name)
    for name in ("shots", "metric", "n", "A", "B", "delta"):
        table.add_column(name, justify="left" if name == "metric" else "right")


def _comparison_cells(row: dict[str, Any]) -> list[Any]:
    return [_t(row["metric"]), str(row["n"]), pct(row["a"]), pct(row["b"]), _delta(row)]


def text_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], right: Container[int] = (),
               row_styles: Sequence[str] = ()) -> Table:
    """A table whose cells are already formatted (the HTML report's), for the terminal; cells are
    escaped, since task and path names may hold rich markup brackets."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(_t(column), justify="right" if index in right else "left")
    for index, row in enumerate(rows):
        style = row_styles[index] if index < len(row_styles) else ""
        table.add_row(*(_t(cell) for cell in row), style=style or None)
    return table


def sweep_table(sweep: dict[str, Any]) -> Table:
    """FLAN's cluster ablation as rows: clusters trained on, and the held-out score with its interval."""
    held = _t(", ".join(sweep["held_out_clusters"]))
    table = Table(title=f"Cluster sweep: held-out score on {held}", title_justify="left")
    for column in ("clusters", "trained on", "metric", "held-out score [95% interval] (%)"):
        table.add_column(column, justify="left" if column in ("trained on", "metric") else "right")
    for point in sweep["points"]:
        table.add_row(str(point["n_clusters"]), _t(", ".join(point["trained_clusters"]) or "(base model)"),
                      _t(point["metric"]), _interval(point))
    return table


def generalization_table(rows: list[dict[str, Any]], label_a: str, label_b: str, confidence: float) -> Table:
    """`compare.compare_by_seen_status`: base (A) against tuned (B) per seen/held-out label and cluster."""
    table = Table(title=f"Generalization: B = {_t(label_b)} against A = {_t(label_a)}, by what B was "
                        f"tuned on (primary metric, %; delta = B - A [{100 * confidence:g}% paired bootstrap "
                        "interval], * the interval excludes 0)", title_justify="left")
    for name in ("B's label", "cluster", "shots", "metric", "n", "A", "B", "delta"):
        table.add_column(name, justify="left" if name in ("B's label", "cluster", "metric") else "right")
    for index, row in enumerate(rows):
        last_of_label = index + 1 == len(rows) or rows[index + 1]["seen_status"] != row["seen_status"]
        shots = row["shots"] if isinstance(row["shots"], int) else ",".join(str(k) for k in row["shots"])
        table.add_row(_label(row["seen_status"]), _t(row["cluster"]), str(shots), *_comparison_cells(row),
                      style="bold" if row["cluster"] == "(overall)" else None, end_section=last_of_label)
    return table
