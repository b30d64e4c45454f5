"""Terminal tables (rich) built from run records; the CLI decides where they are printed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.table import Table

from harness.tasks import Task


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


def ungrouped(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in record["scores"] if "group" not in s]


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


def primary_metric(score: dict[str, Any]) -> str:
    """The metric a task is ranked by: its first declared metric."""
    return next(iter(score["metrics"]))


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
