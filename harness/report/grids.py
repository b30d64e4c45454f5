"""The report's tables as `Grid`s of formatted cells, so the page, the Markdown and the terminal show
the same text; every number comes from `harness.analysis`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.report.figures import STATUS_NAMES, status_of, status_order
from harness.report.formats import DASH, interval, pct, signed, span
from harness.report.inputs import LoadedRun

CONFIDENCE = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Grid:
    """A table as formatted strings, so the page, the Markdown and the terminal show the same cells.

    `right` holds the indexes of numeric (right-aligned) columns; `marks` a CSS class per row
    ("up", "down" or "") for significant changes."""

    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: frozenset[int] = frozenset()
    note: str = ""
    marks: tuple[str, ...] = ()


def joined(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def runs_grid(runs: list[LoadedRun], labels: list[str]) -> Grid:
    rows = []
    for label, (directory, record, samples) in zip(labels, runs, strict=True):
        # The manifest summary and the --seen declaration are JSON objects of the spec (see RunSpec).
        manifest, declared = record.spec.training_manifest, record.spec.declared_seen
        if manifest is not None:
            held_out = "held out: " + (", ".join(manifest.get("held_out_clusters", [])) or DASH)
        elif declared is not None:
            held_out = "seen (--seen): " + (", ".join(declared.get("tasks", [])) or DASH)
        else:
            held_out = DASH
        computed = str(len(samples))
        if record.budget is not None:
            computed += f" of {sum(c.cells for c in record.budget.cells)} (--budget {record.budget.requested}"
            computed += ", adaptive design)" if record.budget.design == "adaptive" else ")"
        rows.append((label, record.spec.model_name or DASH, directory, held_out, str(len(record.spec.tasks)),
                     joined(record.shot_counts), computed))
    return Grid("table-runs", "Runs", ("run", "model", "directory", "labels", "tasks", "shots", "samples"),
                tuple(rows), frozenset({4, 6}), note="The first run is the baseline that later runs are compared "
                "with. A budgeted run computed only some (template, row) cells: its tables hold means over those "
                "cells, and \"Scores over formats\" its estimates of the rest.")


def cluster_grid(clusters: dict[str, list[dict[str, Any]]], labels: list[str]) -> Grid:
    ordered = sorted(((label, row) for label in labels for row in clusters[label]),
                     key=lambda p: (p[1]["cluster"], p[1]["shots"], labels.index(p[0]), status_order(status_of(p[1]))))
    rows = tuple((row["cluster"], str(row["shots"]), label, STATUS_NAMES[status_of(row)], str(row.get("metric", "")),
                  pct(row.get("mean")), interval(row.get("low"), row.get("high")), str(row.get("tasks", DASH)),
                  str(row.get("samples", DASH))) for label, row in ordered)
    return Grid("table-clusters", "Score per cluster",
                ("cluster", "shots", "run", "seen", "metric", "mean", f"{CONFIDENCE:.0%} interval", "tasks", "samples"),
                rows, frozenset({1, 5, 7, 8}), note="Mean primary metric over the cluster's tasks and templates, with "
                "its bootstrap interval; seen status splits a cluster where the run has labels.")


def comparison_grids(comparison: dict[str, Any], base: str, label: str, index: int) -> list[Grid]:
    columns = ("cluster", "shots", "metric", base, label, "delta", f"{CONFIDENCE:.0%} interval", "sig.", "n")
    overall = comparison.get("overall") or {}
    head = [("(overall)", _shots_cell(overall.get("shots")), str(overall.get("metric", "")), *_delta_cells(overall))]
    marks = [_mark(overall)]
    for row in comparison.get("clusters", []):
        head.append((row["cluster"], str(row["shots"]), str(row.get("metric", "")), *_delta_cells(row)))
        marks.append(_mark(row))
    only = (f"{comparison.get('shared_samples', DASH)} shared samples; {comparison.get('only_a', 0)} only in "
            f"{base}, {comparison.get('only_b', 0)} only in {label}. ")
    grids = [Grid(f"table-compare-{index}", f"{label} against {base}: clusters", columns, tuple(head),
                  frozenset({1, 3, 4, 5, 8}), note=only + "Paired on shared samples; * marks a delta whose interval "
                  "excludes zero.", marks=tuple(marks))]
    task_rows = [(str(row.get("cluster", "")), row["task"], str(row["shots"]), str(row.get("metric", "")),
                  *_delta_cells(row)) for row in comparison.get("tasks", [])]
    grids.append(Grid(f"table-compare-{index}-tasks", f"{label} against {base}: tasks",
                      ("cluster", "task", *columns[1:]), tuple(task_rows), frozenset({2, 4, 5, 6, 9}),
                      marks=tuple(_mark(row) for row in comparison.get("tasks", []))))
    return grids


def generalization_grid(rows: list[dict[str, Any]], base: str, label: str, index: int) -> Grid:
    """`compare.compare_by_seen_status`: the tuned run against its base, split by what it was tuned on."""
    columns = (f"{label}'s label", "cluster", "shots", "metric", base, label, "delta", f"{CONFIDENCE:.0%} interval",
               "sig.", "n")
    cells = tuple((row["seen_status"].replace("_", " "), row["cluster"], _shots_cell(row["shots"]),
                   str(row.get("metric", "")), *_delta_cells(row)) for row in rows)
    return Grid(f"table-generalization-{index}", f"Generalization: {label} against {base} by seen status", columns,
                cells, frozenset({2, 4, 5, 6, 9}), note="Each label compares only the samples the tuned run scores "
                "under it: seen templates of trained tasks, held-out templates of trained tasks, held-out tasks of "
                "trained clusters, held-out clusters. Paired bootstrap; * marks a delta whose interval excludes zero.",
                marks=tuple(_mark(row) for row in rows))


def _shots_cell(shots: Any) -> str:
    if isinstance(shots, list):
        return joined(shots)
    return DASH if shots is None else str(shots)


def _delta_cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (pct(row.get("a")), pct(row.get("b")), signed(row.get("delta")),
            interval(row.get("low"), row.get("high"), "+"), "*" if row.get("significant") else "",
            str(row.get("n", DASH)))


def _mark(row: dict[str, Any]) -> str:
    if not row.get("significant") or row.get("delta") is None:
        return ""
    return "up" if row["delta"] > 0 else "down"


def gap_grid(gaps: dict[str, list[dict[str, Any]]]) -> Grid:
    rows = [(label, str(row["shots"]), pct(row.get("seen")), pct(row.get("held_out_template")),
             pct(row.get("held_out_task")), pct(row.get("held_out_cluster")), signed(row.get("gap")))
            for label, label_rows in gaps.items() for row in label_rows]
    return Grid("table-gap", "Generalization gap", ("run", "shots", "seen", "held-out template", "held-out task",
                                                   "held-out cluster", "gap"), tuple(rows), frozenset(range(1, 7)),
                note="Mean primary metric by how each (task, template) relates to the model's training, "
                     "for runs with labels; gap: seen minus the mean of the held-out labels present.")


def sensitivity_grid(sensitivity: dict[str, list[dict[str, Any]]]) -> Grid:
    rows = [(label, row["task"], str(row["shots"]), str(row["templates"]), pct(row["median"]),
             span(row["q1"], row["q3"]), span(row["min"], row["max"]), row.get("best_template") or DASH,
             row.get("worst_template") or DASH)
            for label, label_rows in sensitivity.items() for row in label_rows]
    return Grid("table-sensitivity", "Template sensitivity",
                ("run", "task", "shots", "templates", "median", "IQR", "min" + DASH + "max", "best", "worst"),
                tuple(rows), frozenset({2, 3, 4}), note="The primary metric across each task's templates, as T0 "
                "reports it; no best or worst when every template scores the same.")


def sweep_grid(sweep: dict[str, Any]) -> Grid:
    rows = [(str(p["n_clusters"]), ", ".join(p["trained_clusters"]) or "(base model)", p["metric"], pct(p["mean"]),
             interval(p["low"], p["high"]), str(p.get("run") or DASH)) for p in sweep["points"]]
    note = ["Held out: " + (", ".join(sweep["held_out_clusters"]) or DASH) + "."]
    if isinstance(sweep.get("base_model"), str):
        note.append(f"Base model: {sweep['base_model']}.")
    if isinstance(sweep.get("order"), list):
        note.append("Clusters added in the order " + ", ".join(str(c) for c in sweep["order"]) + ".")
    return Grid("table-sweep", "Cluster sweep", ("clusters", "trained clusters", "metric", "held-out score",
                                                 "interval", "run"),
                tuple(rows), frozenset({0, 3}), note=" ".join(note))

