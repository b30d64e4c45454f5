"""One self-contained HTML page (and its Markdown twin) that lays evaluation runs side by side.

The page is a single file: plots are inline SVG, the style sheet is inline, and there are no
scripts, fonts, images or links to fetch, so it reads the same from a CI artifact, a mail
attachment or a laptop with no network. Every number on it comes from `harness.analysis`; this
module chooses the plots (drawn by `harness.report.figures`) and the tables (`harness.report.grids`,
read from the runs and sweep of `harness.report.inputs`) and lays them out. The bytes depend only on
the inputs (matplotlib's SVG ids are salted with a constant, its date stamp and metadata are dropped,
nothing iterates over an unordered set), so two reports of the same runs can be diffed.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.compare import compare_by_seen_status, compare_runs, paired_task_scores
from harness.analysis.scores import cluster_scores, generalization_gap, shots_curve, task_scores, template_sensitivity
from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.report.figures import (
    PALETTE,
    cluster_figure,
    figure_svg,
    scatter_figure,
    shots_figure,
    sweep_figure,
    template_figure,
)
from harness.report.grids import (
    CONFIDENCE,
    RESAMPLES,
    Grid,
    cluster_grid,
    comparison_grids,
    gap_grid,
    generalization_grid,
    joined,
    runs_grid,
    sensitivity_grid,
    sweep_grid,
)
from harness.report.inputs import LoadedRun, check_sweep
from harness.report.spread import PLOT_ID as SPREAD_PLOT
from harness.report.spread import RESAMPLES as SPREAD_RESAMPLES
from harness.report.spread import (
    effects_grid,
    spread_caption,
    spread_data,
    spread_figure,
    spread_grid,
    spread_omission,
    spreads,
)


@dataclass(frozen=True)
class Plot:
    """A drawn figure: `id` is the HTML element id, `svg` the inline SVG markup."""

    id: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class Report:
    """Everything the page shows, in the order it shows it, plus the numbers behind it (`data`)."""

    title: str
    subtitle: str
    plots: tuple[Plot, ...]
    omitted: tuple[tuple[str, str], ...]
    tables: tuple[Grid, ...]
    data: dict[str, Any] = field(default_factory=dict)
    formats: tuple[Plot, ...] = ()
    """The "Scores over formats" section's figure; its tables are among `tables` (`FORMAT_TABLES`)."""


FORMAT_TABLES = ("table-spread", "table-tag-effects")


def _labels(runs: list[LoadedRun]) -> list[str]:
    """Run ids, or directories where two runs share an id (the same model in two result folders)."""
    ids = [record.run_id or Path(directory).name for directory, record, _ in runs]
    return [run_id if ids.count(run_id) == 1 else directory
            for run_id, (directory, _, _) in zip(ids, runs, strict=True)]


def build_report(
    runs: list[LoadedRun], sweep: dict[str, Any] | None, *,
    seed: int = 0, title: str | None = None, estimator: str = "plug-in",
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
    gaps = {label: generalization_gap(r) for label, (r, _) in zip(labels, pairs, strict=True) if r.labelled}
    comparisons: list[tuple[str, dict[str, Any]]] = []
    by_status: list[tuple[str, list[dict[str, Any]]]] = []
    # The scatter's points, on the samples each later run shares with the baseline (as the paired
    # task table beside it), so the two never show two numbers for one task.
    paired: dict[str, list[dict[str, Any]]] = {label: [] for label in labels[1:]}
    omitted: list[tuple[str, str]] = []
    for label, pair in zip(labels[1:], pairs[1:], strict=True):
        try:
            comparisons.append((label, compare_runs(pairs[0], pair, seed=seed, resamples=RESAMPLES,
                                                    confidence=CONFIDENCE, labels=(labels[0], label))))
            paired[label] = paired_task_scores(pairs[0], pair, seed=seed, resamples=RESAMPLES, confidence=CONFIDENCE,
                                               labels=(labels[0], label))
            if pair[0].labelled:
                by_status.append((label, compare_by_seen_status(pairs[0], pair, seed=seed, resamples=RESAMPLES,
                                                                confidence=CONFIDENCE, labels=(labels[0], label))))
        except HarnessError as exc:
            omitted.append((f"comparison {labels[0]} vs {label}", str(exc)))

    plots: list[Plot] = []
    formats: list[Plot] = []

    def add(plot_id: str, title: str, caption: str, why_not: str | None, draw, into: list[Plot] = plots) -> None:
        if why_not is None:
            into.append(Plot(plot_id, title, caption, figure_svg(draw(), plot_id)))
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
    shots_caption, plotted = _shots_curves(pairs, labels, curves)
    add("plot-shots", "Score against shots", shots_caption,
        None if len(shot_counts) > 1 else f"one shot count ({joined(shot_counts)}-shot): no shots curve",
        lambda: shots_figure(plotted, labels, colours))
    add("plot-scatter", f"Per task: {labels[0]} against later runs",
        f"Each point is a task (and shot count): x is its score under {labels[0]}, y under the later run, both "
        f"over the samples the two runs share (the rows and templates of the paired task table, whose numbers "
        "they are; where the later run labels a task's templates differently, the task has one point per label, "
        f"over that label's templates). Points above the diagonal improved; whiskers: each run's {CONFIDENCE:.0%} "
        "bootstrap interval on those samples. Colour: seen status where the later run has one, else cluster; "
        "marker: shot count.",
        None if len(runs) > 1 else "one run: no base-against-tuned scatter",
        lambda: scatter_figure(paired, labels))
    add("plot-sweep", "Held-out score against training clusters",
        "Held-out score after tuning on more and more clusters (0: the base model); band: the interval "
        "of each point.", None if sweep is not None else "no --sweep given: no sweep curve",
        lambda: sweep_figure(sweep))
    spread, spread_omitted = spreads(pairs, labels, seed=seed, estimator=estimator)
    omitted += spread_omitted
    add(SPREAD_PLOT, "Scores over formats", spread_caption(spread, labels), spread_omission(spread),
        lambda: spread_figure(spread, labels, colours), formats)

    tables = [runs_grid(runs, labels)]
    tables += [generalization_grid(rows, labels[0], label, index) for index, (label, rows) in enumerate(by_status, 1)]
    tables.append(cluster_grid(clusters, labels))
    for index, (label, comparison) in enumerate(comparisons, start=1):
        tables += comparison_grids(comparison, labels[0], label, index)
    if gaps:
        tables.append(gap_grid(gaps))
    else:
        omitted.append(("generalization gap", "no run has seen / held-out labels (from a training manifest or "
                                              "`harness run --seen`): no generalization gap"))
    tables.append(sensitivity_grid(sensitivity))
    if sweep is not None:
        tables.append(sweep_grid(sweep))
    if spread:
        effects = effects_grid(spread, labels)
        tables += [spread_grid(spread, labels)] + ([effects] if effects is not None else [])
        if effects is None:
            omitted.append(("table-tag-effects", "no task's templates differ in their tags: no tag effects"))

    estimates = f", {SPREAD_RESAMPLES} for the estimates over formats" if spread else ""
    subtitle = (f"{len(runs)} run{'s' if len(runs) > 1 else ''}; baseline {labels[0]}; intervals are "
                f"{CONFIDENCE:.0%} bootstrap intervals ({RESAMPLES} resamples{estimates}, seed {seed}); scores in "
                "percent.")
    data = {"labels": labels, "cluster_scores": clusters, "task_scores": tasks, "shots_curve": curves,
            "shots_plot": plotted,
            "template_sensitivity": sensitivity, "generalization_gap": gaps,
            "comparisons": [c for _, c in comparisons], "generalization": dict(by_status), "scatter": paired,
            "sweep": sweep, "spread": spread_data(spread)}
    return Report(title or "Evaluation report", subtitle, tuple(plots), tuple(omitted), tuple(tables), data,
                  tuple(formats))


def _shots_curves(pairs: list[tuple[RunRecord, list[Sample]]], labels: list[str],
                  curves: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The shots plot's caption and curves: over the tasks every run covers, when the runs' task sets
    differ, so that no line's average moves only because its run has other tasks; the caption says
    which tasks each run covers and which the lines average."""
    covered = [sorted({score.task for score in record.ungrouped()}) for record, _ in pairs]
    if all(tasks == covered[0] for tasks in covered):
        return "Mean primary metric over all tasks and templates per shot count, one line per run.", curves
    shared = sorted(set(covered[0]).intersection(*covered[1:]))
    each = "; ".join(f"{label}: {joined(tasks)}" for label, tasks in zip(labels, covered, strict=True))
    if not shared:
        return ("Mean primary metric over each run's own tasks and templates per shot count, one line per run. "
                f"The runs share no task, so the lines average different tasks ({each})."), curves
    plotted = {label: shots_curve(record, tasks=shared) for label, (record, _) in zip(labels, pairs, strict=True)}
    return (f"Mean primary metric per shot count over the {len(shared)} task{'s' if len(shared) > 1 else ''} every "
            f"run covers ({joined(shared)}), and their templates; one line per run. The runs cover different tasks "
            f"({each}): the others are left out, so that every line averages the same tasks."), plotted


def _hatch_note(runs: list[LoadedRun]) -> str:
    if not any(record.labelled for _, record, _ in runs):
        return ""
    return ("; hatching: seen status (plain: seen or unlabelled, /// held-out template, --- held-out task, "
            "xxx held-out cluster)")


# ---------------------------------------------------------------------------------------------
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


def _html_figure(plot: Plot) -> str:
    return (f'<figure id="{html.escape(plot.id)}">\n{plot.svg}\n<figcaption><b>{html.escape(plot.title)}.'
            f"</b> {html.escape(plot.caption)}</figcaption>\n</figure>")


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
    parts += [_html_figure(plot) for plot in report.plots]
    if report.omitted:
        parts.append('<ul class="omitted">' + "".join(
            f"<li>{html.escape(what)}: {html.escape(why)}</li>" for what, why in report.omitted) + "</ul>")
    parts.append("</section>")
    formats = [grid for grid in report.tables if grid.id in FORMAT_TABLES]
    if report.formats or formats:
        parts.append('<section id="formats">\n<h2>Scores over formats</h2>')
        parts += [_html_figure(plot) for plot in report.formats] + [_html_table(grid) for grid in formats]
        parts.append("</section>")
    parts.append('<section id="tables">\n<h2>Tables</h2>')
    parts += [_html_table(grid) for grid in report.tables if grid.id != "table-runs" and grid.id not in FORMAT_TABLES]
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
    plots = ", ".join(plot.id for plot in (*report.plots, *report.formats))
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
