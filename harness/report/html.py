"""One self-contained HTML page (and its Markdown twin) that lays evaluation runs side by side.

The page is a single file: plots are inline SVG, the style sheet is inline, and there are no
scripts, fonts, images or links to fetch, so it reads the same from a CI artifact, a mail
attachment or a laptop with no network. Every number on it comes from `harness.analysis` and
`harness.compare`; this module chooses the tables and plots (drawn by `harness.report_figures`) and
lays them out. The bytes depend only on the inputs (matplotlib's SVG ids are salted with a constant,
its date stamp and metadata are dropped, nothing iterates over an unordered set), so two reports of
the same runs can be diffed.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.compare import compare_by_seen_status, compare_runs
from harness.analysis.scores import cluster_scores, generalization_gap, shots_curve, task_scores, template_sensitivity
from harness.errors import HarnessError
from harness.eval.store import load_run
from harness.report.figures import (
    DASH,
    PALETTE,
    STATUS_NAMES,
    cluster_figure,
    figure_svg,
    interval,
    pct,
    scatter_figure,
    shots_figure,
    signed,
    span,
    status_of,
    status_order,
    sweep_figure,
    template_figure,
)

CONFIDENCE = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Plot:
    """A drawn figure: `id` is the HTML element id, `svg` the inline SVG markup."""

    id: str
    title: str
    caption: str
    svg: str


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


@dataclass(frozen=True)
class Report:
    """Everything the page shows, in the order it shows it, plus the numbers behind it (`data`)."""

    title: str
    subtitle: str
    plots: tuple[Plot, ...]
    omitted: tuple[tuple[str, str], ...]
    tables: tuple[Grid, ...]
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Inputs


def load_runs(paths: list[Path]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(directory, record, samples) per run folder, with a one-line error naming a bad folder."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise HarnessError(f"{path}: no such run directory; give folders written by `harness run` "
                               "(results/<run-id>)")
        if not (path / "samples.jsonl").exists() and (path / "run.json").exists():
            raise HarnessError(f"{path}: run.json without samples.jsonl; the run directory is incomplete "
                               "(rerun its `harness run` command with --overwrite)")
        try:
            record, samples = load_run(path)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}: run.json or samples.jsonl is not valid JSON ({exc.msg} at line "
                               f"{exc.lineno}); rerun its `harness run` command with --overwrite") from None
        if not isinstance(record, dict) or not isinstance(record.get("scores"), list) or "run_id" not in record:
            raise HarnessError(f"{path / 'run.json'}: not a run record (no 'run_id' or 'scores'); give folders "
                               "written by `harness run`")
        runs.append((str(path), record, samples))
    return runs


def load_sweep(path: Path) -> dict[str, Any]:
    """A cluster sweep's `sweep.json` (given the file or its folder), checked field by field."""
    file = path / "sweep.json" if path.is_dir() else path
    if not file.is_file():
        raise HarnessError(f"{path}: no sweep.json; give the folder `harness tune --sweep clusters` wrote "
                           "or its sweep.json")
    try:
        sweep = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{file}: not valid JSON ({exc}); rerun the sweep or fix the file") from None
    return check_sweep(sweep, str(file))


def check_sweep(sweep: Any, where: str = "sweep") -> dict[str, Any]:
    """The sweep with every point carrying its metric, or a one-line error naming the bad field.

    The metric may be given once at the top level or per point (`harness tune --sweep` writes it per
    point, as `analysis.overall_score` returns it); both read the same afterwards."""

    def bad(field: str, what: str) -> HarnessError:
        return HarnessError(f"{where}: field {field!r} {what}; rerun `harness tune --sweep clusters` to rewrite it")

    if not isinstance(sweep, dict):
        raise bad("(top level)", "must be an object")
    held_out = sweep.get("held_out_clusters")
    if not isinstance(held_out, list) or not all(isinstance(c, str) for c in held_out):
        raise bad("held_out_clusters", "must be a list of cluster names")
    top_metric = sweep.get("metric")
    if top_metric is not None and not isinstance(top_metric, str):
        raise bad("metric", "must be a string")
    points = sweep.get("points")
    if not isinstance(points, list) or not points:
        raise bad("points", "must be a non-empty list")
    checked = []
    for index, point in enumerate(points):
        field = f"points[{index}]"
        if not isinstance(point, dict):
            raise bad(field, "must be an object")
        if not isinstance(point.get("n_clusters"), int) or isinstance(point["n_clusters"], bool):
            raise bad(f"{field}.n_clusters", "must be an integer")
        trained = point.get("trained_clusters", [])
        if not isinstance(trained, list) or not all(isinstance(c, str) for c in trained):
            raise bad(f"{field}.trained_clusters", "must be a list of cluster names")
        metric = point.get("metric", top_metric)
        if not isinstance(metric, str):
            raise bad(f"{field}.metric", "must be a string (or give 'metric' once at the top level)")
        for key in ("mean", "low", "high"):
            if not _is_number(point.get(key)):
                raise bad(f"{field}.{key}", "must be a number")
        for key in ("run", "checkpoint"):
            if point.get(key) is not None and not isinstance(point[key], str):
                raise bad(f"{field}.{key}", "must be a path")
        checked.append({**point, "trained_clusters": trained, "metric": metric})
    checked.sort(key=lambda p: p["n_clusters"])
    metrics = list(dict.fromkeys(p["metric"] for p in checked))
    return {**sweep, "metric": top_metric or ",".join(metrics), "points": checked}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def labelled(record: dict[str, Any]) -> bool:
    """Whether the run's scores say seen or held out (from a training manifest or `harness run --seen`)."""
    return any(status_of(s) is not None for s in record["scores"])


def _labels(runs: list[tuple[str, dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    """Run ids, or directories where two runs share an id (the same model in two result folders)."""
    ids = [record.get("run_id") or Path(directory).name for directory, record, _ in runs]
    return [run_id if ids.count(run_id) == 1 else directory
            for run_id, (directory, _, _) in zip(ids, runs, strict=True)]


# ---------------------------------------------------------------------------------------------
# Building


def build_report(
    runs: list[tuple[str, dict[str, Any], list[dict[str, Any]]]], sweep: dict[str, Any] | None, *,
    seed: int = 0, title: str | None = None,
) -> Report:
    """Compute every table and plot for `runs` (directory, record, samples), the first being the baseline.

    Later runs are compared with the first, as a tuned checkpoint is read against its base model."""
    if not runs:
        raise HarnessError("harness report needs at least one run directory")
    if sweep is not None:
        sweep = check_sweep(sweep)
    labels = _labels(runs)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    pairs = [(record, samples) for _, record, samples in runs]
    clusters = {label: cluster_scores(r, s, seed=seed, resamples=RESAMPLES, confidence=CONFIDENCE)
                for label, (r, s) in zip(labels, pairs, strict=True)}
    tasks = {label: task_scores(r, s, seed=seed, resamples=RESAMPLES, confidence=CONFIDENCE)
             for label, (r, s) in zip(labels, pairs, strict=True)}
    curves = {label: shots_curve(r) for label, (r, _) in zip(labels, pairs, strict=True)}
    sensitivity = {label: template_sensitivity(r) for label, (r, _) in zip(labels, pairs, strict=True)}
    gaps = {label: generalization_gap(r) for label, (r, _) in zip(labels, pairs, strict=True) if labelled(r)}
    comparisons: list[tuple[str, dict[str, Any]]] = []
    by_status: list[tuple[str, list[dict[str, Any]]]] = []
    omitted: list[tuple[str, str]] = []
    for label, pair in zip(labels[1:], pairs[1:], strict=True):
        try:
            comparisons.append((label, compare_runs(pairs[0], pair, seed=seed, resamples=RESAMPLES,
                                                    confidence=CONFIDENCE, labels=(labels[0], label))))
            if labelled(pair[0]):
                by_status.append((label, compare_by_seen_status(pairs[0], pair, seed=seed, resamples=RESAMPLES,
                                                                confidence=CONFIDENCE, labels=(labels[0], label))))
        except HarnessError as exc:
            omitted.append((f"comparison {labels[0]} vs {label}", str(exc)))

    plots: list[Plot] = []

    def add(plot_id: str, title: str, caption: str, why_not: str | None, draw) -> None:
        if why_not is None:
            plots.append(Plot(plot_id, title, caption, figure_svg(draw(), plot_id)))
        else:
            omitted.append((plot_id, why_not))

    add("plot-clusters", "Score per cluster",
        f"Mean primary metric per cluster, one bar per run (colour){_hatch_note(runs)}; whiskers: "
        f"{CONFIDENCE:.0%} bootstrap interval.", None if any(clusters.values()) else "no cluster scores in the runs",
        lambda: cluster_figure(clusters, labels, colours))
    add("plot-templates", "Spread across templates",
        "Primary metric of each template of a task, one box per run: the box spans the interquartile range, "
        "the line is the median, dots are single templates. A wide box means the score depends on the wording.",
        None, lambda: template_figure(pairs, labels, colours))
    shot_counts = sorted({row["shots"] for rows in curves.values() for row in rows})
    add("plot-shots", "Score against shots",
        "Mean primary metric over all tasks and templates per shot count, one line per run.",
        None if len(shot_counts) > 1 else f"one shot count ({_join(shot_counts)}-shot): no shots curve",
        lambda: shots_figure(curves, labels, colours))
    add("plot-scatter", f"Per task: {labels[0]} against later runs",
        f"Each point is a task (and shot count): x is its score under {labels[0]}, y under the later run; "
        "points above the diagonal improved; whiskers: intervals. Colour: seen status where the later run has one, "
        "else cluster; marker: shot count.",
        None if len(runs) > 1 else "one run: no base-against-tuned scatter",
        lambda: scatter_figure(tasks, labels))
    add("plot-sweep", "Held-out score against training clusters",
        "Held-out score after tuning on more and more clusters (0: the base model); band: the interval "
        "of each point.", None if sweep is not None else "no --sweep given: no sweep curve",
        lambda: sweep_figure(sweep))

    tables = [_runs_grid(runs, labels)]
    tables += [_generalization_grid(rows, labels[0], label, index) for index, (label, rows) in enumerate(by_status, 1)]
    tables.append(_cluster_grid(clusters, labels))
    for index, (label, comparison) in enumerate(comparisons, start=1):
        tables += _comparison_grids(comparison, labels[0], label, index)
    if gaps:
        tables.append(_gap_grid(gaps))
    else:
        omitted.append(("generalization gap", "no run has seen / held-out labels (from a training manifest or "
                                              "`harness run --seen`): no generalization gap"))
    tables.append(_sensitivity_grid(sensitivity))
    if sweep is not None:
        tables.append(_sweep_grid(sweep))

    subtitle = (f"{len(runs)} run{'s' if len(runs) > 1 else ''}; baseline {labels[0]}; intervals are "
                f"{CONFIDENCE:.0%} bootstrap intervals ({RESAMPLES} resamples, seed {seed}); scores in percent.")
    data = {"labels": labels, "cluster_scores": clusters, "task_scores": tasks, "shots_curve": curves,
            "template_sensitivity": sensitivity, "generalization_gap": gaps,
            "comparisons": [c for _, c in comparisons], "generalization": dict(by_status), "sweep": sweep}
    return Report(title or "Evaluation report", subtitle, tuple(plots), tuple(omitted), tuple(tables), data)


def _join(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _hatch_note(runs: list[tuple[str, dict[str, Any], list[dict[str, Any]]]]) -> str:
    if not any(labelled(record) for _, record, _ in runs):
        return ""
    return ("; hatching: seen status (plain: seen or unlabelled, /// held-out template, --- held-out task, "
            "xxx held-out cluster)")


# ---------------------------------------------------------------------------------------------
# Tables


def _runs_grid(runs: list[tuple[str, dict[str, Any], list[dict[str, Any]]]], labels: list[str]) -> Grid:
    rows = []
    for label, (directory, record, samples) in zip(labels, runs, strict=True):
        manifest, declared = record.get("training_manifest"), record.get("declared_seen")
        if isinstance(manifest, dict):
            held_out = "held out: " + (", ".join(manifest.get("held_out_clusters", [])) or DASH)
        elif isinstance(declared, dict):
            held_out = "seen (--seen): " + (", ".join(declared.get("tasks", [])) or DASH)
        else:
            held_out = DASH
        shots = sorted({s["shots"] for s in record["scores"]})
        rows.append((label, str(record.get("model", {}).get("model", DASH)), directory, held_out,
                     str(len(record.get("tasks", []))), _join(shots), str(len(samples))))
    return Grid("table-runs", "Runs", ("run", "model", "directory", "labels", "tasks", "shots", "samples"),
                tuple(rows), frozenset({4, 6}), note="The first run is the baseline that later runs are compared "
                "with.")


def _cluster_grid(clusters: dict[str, list[dict[str, Any]]], labels: list[str]) -> Grid:
    ordered = sorted(((label, row) for label in labels for row in clusters[label]),
                     key=lambda p: (p[1]["cluster"], p[1]["shots"], labels.index(p[0]), status_order(status_of(p[1]))))
    rows = tuple((row["cluster"], str(row["shots"]), label, STATUS_NAMES[status_of(row)], str(row.get("metric", "")),
                  pct(row.get("mean")), interval(row.get("low"), row.get("high")), str(row.get("tasks", DASH)),
                  str(row.get("samples", DASH))) for label, row in ordered)
    return Grid("table-clusters", "Score per cluster",
                ("cluster", "shots", "run", "seen", "metric", "mean", f"{CONFIDENCE:.0%} interval", "tasks", "samples"),
                rows, frozenset({1, 5, 7, 8}), note="Mean primary metric over the cluster's tasks and templates, with "
                "its bootstrap interval; seen status splits a cluster where the run has labels.")


def _comparison_grids(comparison: dict[str, Any], base: str, label: str, index: int) -> list[Grid]:
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


def _generalization_grid(rows: list[dict[str, Any]], base: str, label: str, index: int) -> Grid:
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
        return _join(shots)
    return DASH if shots is None else str(shots)


def _delta_cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (pct(row.get("a")), pct(row.get("b")), signed(row.get("delta")),
            interval(row.get("low"), row.get("high"), "+"), "*" if row.get("significant") else "",
            str(row.get("n", DASH)))


def _mark(row: dict[str, Any]) -> str:
    if not row.get("significant") or row.get("delta") is None:
        return ""
    return "up" if row["delta"] > 0 else "down"


def _gap_grid(gaps: dict[str, list[dict[str, Any]]]) -> Grid:
    rows = [(label, str(row["shots"]), pct(row.get("seen")), pct(row.get("held_out_template")),
             pct(row.get("held_out_task")), pct(row.get("held_out_cluster")), signed(row.get("gap")))
            for label, label_rows in gaps.items() for row in label_rows]
    return Grid("table-gap", "Generalization gap", ("run", "shots", "seen", "held-out template", "held-out task",
                                                   "held-out cluster", "gap"), tuple(rows), frozenset(range(1, 7)),
                note="Mean primary metric by how each (task, template) relates to the model's training, "
                     "for runs with labels; gap: seen minus the mean of the held-out labels present.")


def _sensitivity_grid(sensitivity: dict[str, list[dict[str, Any]]]) -> Grid:
    rows = [(label, row["task"], str(row["shots"]), str(row["templates"]), pct(row["median"]),
             span(row["q1"], row["q3"]), span(row["min"], row["max"]), row.get("best_template") or DASH,
             row.get("worst_template") or DASH)
            for label, label_rows in sensitivity.items() for row in label_rows]
    return Grid("table-sensitivity", "Template sensitivity",
                ("run", "task", "shots", "templates", "median", "IQR", "min" + DASH + "max", "best", "worst"),
                tuple(rows), frozenset({2, 3, 4}), note="The primary metric across each task's templates, as T0 "
                "reports it; no best or worst when every template scores the same.")


def _sweep_grid(sweep: dict[str, Any]) -> Grid:
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


# Writers

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; line-height: 1.4; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.subtitle { color: #555; margin-top: 0; }
figure { background: white; border: 1px solid #e2e2e2; border-radius: 6px; margin: 18px 0; padding: 12px; }
figure svg { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 0.9em; color: #444; margin-top: 8px; }
figcaption b { color: #1d1d1f; }
ul.omitted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; background: white; font-size: 0.86em; margin: 6px 0 4px; }
th, td { border: 1px solid #e2e2e2; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { word-break: break-all; max-width: 360px; }
tr:nth-child(even) td { background: #fafafc; }
tr.up td { background: #e8f6ea; }
tr.down td { background: #fbeaea; }
p.note { font-size: 0.85em; color: #555; margin: 2px 0 10px; }
.scroll { overflow-x: auto; }
"""


def _html_table(grid: Grid) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in grid.columns)
    lines = []
    for index, row in enumerate(grid.rows):
        mark = grid.marks[index] if index < len(grid.marks) else ""
        cells = []
        for column, cell in enumerate(row):
            css = "num" if column in grid.right else "path" if grid.columns[column] in ("model", "directory",
                                                                                          "run") else ""
            cells.append(f'<td class="{css}">{html.escape(cell)}</td>' if css else f"<td>{html.escape(cell)}</td>")
        lines.append((f'<tr class="{mark}">' if mark else "<tr>") + "".join(cells) + "</tr>")
    body = "\n".join(lines) if lines else f'<tr><td colspan="{len(grid.columns)}">(no rows)</td></tr>'
    note = f'<p class="note">{html.escape(grid.note)}</p>' if grid.note else ""
    return (f'<section id="{html.escape(grid.id)}">\n<h3>{html.escape(grid.title)}</h3>\n<div class="scroll">'
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>\n{note}\n</section>")


def render_html(report: Report) -> str:
    """The page as one string: inline style, inline SVG, every text escaped."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", "<main>",
        f"<h1>{html.escape(report.title)}</h1>", f'<p class="subtitle">{html.escape(report.subtitle)}</p>',
    ]
    by_id = {grid.id: grid for grid in report.tables}
    parts.append(_html_table(by_id["table-runs"]))
    parts.append('<section id="plots">\n<h2>Plots</h2>')
    for plot in report.plots:
        parts.append(f'<figure id="{html.escape(plot.id)}">\n{plot.svg}\n<figcaption><b>{html.escape(plot.title)}.'
                     f"</b> {html.escape(plot.caption)}</figcaption>\n</figure>")
    if report.omitted:
        parts.append('<ul class="omitted">' + "".join(
            f"<li>{html.escape(what)}: {html.escape(why)}</li>" for what, why in report.omitted) + "</ul>")
    parts.append("</section>")
    parts.append('<section id="tables">\n<h2>Tables</h2>')
    parts += [_html_table(grid) for grid in report.tables if grid.id != "table-runs"]
    parts += ["</section>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _md(text: str) -> str:
    """Text for Markdown: angle brackets and ampersands escaped, since renderers pass raw HTML through."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """The report's tables in Markdown (plots stay on the HTML page), for a PR comment or a wiki."""
    lines = [f"# {_md(report.title)}", "", _md(report.subtitle), ""]
    for grid in report.tables:
        lines += [f"## {_md(grid.title)}", ""]
        if grid.note:
            lines += [_md(grid.note), ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in grid.columns) + " |")
        lines.append("|" + "|".join("---:" if i in grid.right else "---" for i in range(len(grid.columns))) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in grid.rows]
        if not grid.rows:
            lines.append("| (no rows) |" + " |" * (len(grid.columns) - 1))
        lines.append("")
    if report.omitted:
        lines += ["## Left out", ""] + [f"- {_md(what)}: {_md(why)}" for what, why in report.omitted] + [""]
    plots = ", ".join(plot.id for plot in report.plots)
    lines += [f"Plots ({plots or 'none'}) are on the HTML page.", ""]
    return "\n".join(lines)


def write_html(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path


def write_markdown(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(report), encoding="utf-8")
    return path
