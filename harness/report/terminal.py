"""Terminal tables (rich) built from run records; the CLI decides where they are printed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.eval.record import primary_metric, ungrouped
from harness.tasks.schema import Task


def _cell(metric: dict[str, float]) -> str:
    return f"{100 * metric['mean']:.1f} ± {100 * metric['stderr']:.1f}"


def score_table(record: dict[str, Any]) -> Table:
    """One line per (task, template), one column per shot count: the primary metric, mean ± stderr (%)."""
    shots = sorted({s["shots"] for s in record["scores"]})
    table = Table(title=f"{record['run_id']}  ({record['model']['model']})", title_justify="left")
    labelled = any("seen_status" in s for s in record["scores"])  # the model has a training manifest
    for column in ("cluster", "task", "template", *(["seen"] if labelled else []), "metric"):
        table.add_column(column)
    for k in shots:
        table.add_column(f"{k}-shot", justify="right")
    rows: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for score in ungrouped(record):
        rows[(score["cluster"], score["task"], score["template"])][score["shots"]] = score
    for (cluster, task, template), by_shots in sorted(rows.items()):
        first = next(iter(by_shots.values()))
        metric = primary_metric(first)
        cells = [_cell(by_shots[k]["metrics"][metric]) if k in by_shots else "" for k in shots]
        seen = [first.get("seen_status", "").replace("_", " ")] if labelled else []
        table.add_row(cluster, task, template, *seen, metric, *cells)
    return table


def group_table(record: dict[str, Any]) -> Table:
    """Per task and `report_by` value (an NIv2 category, say): each metric's mean over templates (%)."""
    grouped = [s for s in record["scores"] if "group" in s]
    metric_names = list(dict.fromkeys(m for s in grouped for m in s["metrics"]))
    table = Table(title="by group (mean over templates, %)", title_justify="left")
    for column in ("task", "field", "value", "shots", "n"):
        table.add_column(column, justify="right" if column in ("shots", "n") else "left")
    for name in metric_names:
        table.add_column(name, justify="right")
    cells: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for score in grouped:
        cells[(score["task"], score["group"]["field"], score["group"]["value"], score["shots"])].append(score)
    for (task, field, value, shots), scores in sorted(cells.items()):
        means = [
            f"{100 * sum(s['metrics'][m]['mean'] for s in scores) / len(scores):.1f}" if m in scores[0]["metrics"]
            else "" for m in metric_names
        ]
        table.add_row(task, field, value, str(shots), str(scores[0]["n"]), *means)
    return table


def cluster_table(records: list[dict[str, Any]]) -> Table:
    """Per cluster and shot count: the mean over tasks and templates of each task's primary metric."""
    table = Table(title="per-cluster score (primary metric, mean over tasks and templates, %)", title_justify="left")
    table.add_column("cluster")
    table.add_column("shots", justify="right")
    for record in records:
        table.add_column(record["run_id"], justify="right")
    cells: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for position, record in enumerate(records):
        for score in ungrouped(record):
            metric = score["metrics"][primary_metric(score)]
            cells[(score["cluster"], score["shots"])][position].append(metric["mean"])
    for (cluster, shots), by_run in sorted(cells.items()):
        values = [by_run.get(i) for i in range(len(records))]
        table.add_row(cluster, str(shots), *(f"{100 * sum(v) / len(v):.1f}" if v else "-" for v in values))
    return table


def task_list_table(clusters: dict[str, list[Task]]) -> Table:
    table = Table(title="tasks by cluster", title_justify="left")
    for column in ("cluster", "task", "kind", "templates", "metrics", "data"):
        table.add_column(column, justify="right" if column == "templates" else "left")
    for cluster, tasks in clusters.items():
        for task in tasks:
            source = "built-in" if task.data.generator else "files" if task.data.files else "hub"
            table.add_row(cluster, task.name, task.kind, str(len(task.templates)), ", ".join(task.metrics), source)
    return table


def sensitivity_table(rows: list[dict[str, Any]]) -> Table:
    """Template sensitivity per task and shot count, as T0 reports it (percent)."""
    table = Table(title="template sensitivity (primary metric across templates, %)", title_justify="left")
    for column in ("task", "shots", "templates", "median", "IQR", "min-max", "best", "worst"):
        table.add_column(column, justify="right" if column in ("shots", "templates", "median") else "left")
    for row in rows:
        table.add_row(
            row["task"], str(row["shots"]), str(row["templates"]), f"{100 * row['median']:.1f}",
            f"{100 * row['q1']:.1f}-{100 * row['q3']:.1f}", f"{100 * row['min']:.1f}-{100 * row['max']:.1f}",
            row["best_template"] or "-", row["worst_template"] or "-",
        )
    return table


def _label(status: str | None) -> str:
    return status.replace("_", " ") if status else "-"


def _interval(row: dict[str, Any]) -> str:
    return f"{100 * row['mean']:.1f} [{100 * row['low']:.1f}, {100 * row['high']:.1f}]"


def seen_cluster_table(rows: list[dict[str, Any]], confidence: float) -> Table:
    """`analysis.cluster_scores`: per cluster, shot count and seen/held-out label, mean [interval] (%)."""
    table = Table(title=f"per-cluster score by seen/held-out (primary metric, mean over tasks and templates, "
                        f"{100 * confidence:g}% bootstrap interval, %)", title_justify="left")
    for column in ("cluster", "shots", "seen", "metric", "tasks", "samples", "score"):
        table.add_column(column, justify="right" if column in ("shots", "tasks", "samples", "score") else "left")
    for row in rows:
        table.add_row(escape(row["cluster"]), str(row["shots"]), _label(row["seen_status"]), row["metric"],
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
        cells = [f"{100 * row[label]:.1f}" if row[label] is not None else "-" for label in labels]
        gap = f"{100 * row['gap']:+.1f}" if row["gap"] is not None else "-"
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
        table.add_row(escape(cluster), task, metric, *(f"{100 * means[k]:.1f}" if k in means else "" for k in shots))
    return table


def _delta(row: dict[str, Any]) -> Text:
    """b - a with its interval, in points; significant ones (interval excludes 0) bold, coloured and starred."""
    text = f"{100 * row['delta']:+.1f} [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]"
    if not row["significant"]:
        return Text(text)
    return Text(f"{text} *", style="bold green" if row["delta"] > 0 else "bold red")


def comparison_table(comparison: dict[str, Any]) -> Table:
    """`compare.compare_runs`: overall and per-cluster scores of both runs and the delta (%)."""
    runs = f"A = {escape(comparison['a'])}, B = {escape(comparison['b'])}"
    table = Table(title=f"{runs}: per cluster (primary metric, mean over tasks, %; delta = B - A "
                        f"[{100 * comparison['confidence']:g}% paired bootstrap interval], * the interval excludes 0)",
                  title_justify="left")
    _comparison_columns(table, "cluster")
    overall = comparison["overall"]
    table.add_row("(overall)", ",".join(str(k) for k in overall["shots"]), *_comparison_cells(overall),
                  end_section=True)
    for row in comparison["clusters"]:
        table.add_row(escape(row["cluster"]), str(row["shots"]), *_comparison_cells(row))
    return table


def comparison_task_table(comparison: dict[str, Any]) -> Table:
    """`compare.compare_runs`: per task and shot count, both runs' scores and the delta (%)."""
    runs = f"A = {escape(comparison['a'])}, B = {escape(comparison['b'])}"
    table = Table(title=f"{runs}: per task (primary metric, mean over templates, %)", title_justify="left")
    _comparison_columns(table, "cluster", "task")
    for row in comparison["tasks"]:
        table.add_row(escape(row["cluster"]), row["task"], str(row["shots"]), *_comparison_cells(row))
    return table


def _comparison_columns(table: Table, *names: str) -> None:
    for name in names:
        table.add_column(name)
    for name in ("shots", "metric", "n", "A", "B", "delta"):
        table.add_column(name, justify="left" if name == "metric" else "right")


def _comparison_cells(row: dict[str, Any]) -> list[Any]:
    return [row["metric"], str(row["n"]), f"{100 * row['a']:.1f}", f"{100 * row['b']:.1f}", _delta(row)]


def text_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], right: Container[int] = (),
               row_styles: Sequence[str] = ()) -> Table:
    """A table whose cells are already formatted (the HTML report's), for the terminal; cells are
    escaped, since task and path names may hold rich markup brackets."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(escape(column), justify="right" if index in right else "left")
    for index, row in enumerate(rows):
        style = row_styles[index] if index < len(row_styles) else ""
        table.add_row(*(escape(cell) for cell in row), style=style or None)
    return table


def sweep_table(sweep: dict[str, Any]) -> Table:
    """FLAN's cluster ablation as rows: clusters trained on, and the held-out score with its interval."""
    held = ", ".join(sweep["held_out_clusters"])
    table = Table(title=f"Cluster sweep: held-out score on {held}", title_justify="left")
    for column in ("clusters", "trained on", "metric", "held-out score [95% interval] (%)"):
        table.add_column(column, justify="left" if column in ("trained on", "metric") else "right")
    for point in sweep["points"]:
        table.add_row(str(point["n_clusters"]), ", ".join(point["trained_clusters"]) or "(base model)",
                      point["metric"], _interval(point))
    return table


def generalization_table(rows: list[dict[str, Any]], label_a: str, label_b: str, confidence: float) -> Table:
    """`compare.compare_by_seen_status`: base (A) against tuned (B) per seen/held-out label and cluster."""
    table = Table(title=f"Generalization: B = {escape(label_b)} against A = {escape(label_a)}, by what B was "
                        f"tuned on (primary metric, %; delta = B - A [{100 * confidence:g}% paired bootstrap "
                        "interval], * the interval excludes 0)", title_justify="left")
    for name in ("B's label", "cluster", "shots", "metric", "n", "A", "B", "delta"):
        table.add_column(name, justify="left" if name in ("B's label", "cluster", "metric") else "right")
    for index, row in enumerate(rows):
        last_of_label = index + 1 == len(rows) or rows[index + 1]["seen_status"] != row["seen_status"]
        shots = row["shots"] if isinstance(row["shots"], int) else ",".join(str(k) for k in row["shots"])
        table.add_row(_label(row["seen_status"]), escape(row["cluster"]), str(shots), *_comparison_cells(row),
                      style="bold" if row["cluster"] == "(overall)" else None, end_section=last_of_label)
    return table
