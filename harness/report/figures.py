"""Figures of the HTML report, and the seen-status vocabulary they share with its tables.

Every figure is a matplotlib `Figure` (no pyplot state, so no backend to select) rendered to SVG markup
fit for inlining into one page; see `figure_svg` for what makes the bytes depend only on the inputs.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

from harness.eval.record import RunRecord, Sample

# The number formats live in harness.report.formats (one for every table); named here too, where the
# report's tables and tests have always found them.
from harness.report.formats import DASH
from harness.report.formats import interval as interval
from harness.report.formats import pct as pct
from harness.report.formats import signed as signed
from harness.report.formats import span as span

SEEN_STATUSES = ("seen", "held_out_template", "held_out_task", "held_out_cluster")
STATUS_NAMES = {"seen": "seen", "held_out_template": "held-out template", "held_out_task": "held-out task",
                "held_out_cluster": "held-out cluster", None: "unlabelled"}
# Hatching tells seen from held-out bars without using up colours, which stand for runs.
# (Dotted hatches are left out: matplotlib writes each dot as a curve, and a page grows by megabytes.)
STATUS_HATCH = {"seen": "", "held_out_template": "///", "held_out_task": "---", "held_out_cluster": "xxx",
                None: ""}
STATUS_COLOURS = {"seen": "#2ca02c", "held_out_template": "#1f77b4", "held_out_task": "#ff7f0e",
                  "held_out_cluster": "#d62728", None: "#7f7f7f"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def status_of(row: dict[str, Any]) -> str | None:
    status = row.get("seen_status")
    return status if status in SEEN_STATUSES else None


def status_order(status: str | None) -> int:
    return SEEN_STATUSES.index(status) if status in SEEN_STATUSES else len(SEEN_STATUSES)


# ---------------------------------------------------------------------------------------------
# Plots


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_svg(figure, prefix: str) -> str:
    """The figure as SVG markup fit for inlining: no XML prolog, no metadata, ids unique on the page.

    Glyph and clip-path ids are prefixed with the plot id, since several SVGs in one HTML
    document share one id namespace."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "harness-report", "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", text)
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    return re.sub(r'(\bid="|href="#|url\(#)([^")]+)',
                  lambda m: m.group(1) + (f"{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(2)), text)


def cluster_figure(clusters: dict[str, list[dict[str, Any]]], labels: list[str], colours: dict[str, str]):
    from matplotlib.patches import Patch

    shots = sorted({row["shots"] for rows in clusters.values() for row in rows})
    names = sorted({row["cluster"] for rows in clusters.values() for row in rows})
    series = sorted({(label, status_of(row)) for label in labels for row in clusters[label]},
                    key=lambda s: (labels.index(s[0]), status_order(s[1])))
    index = {(label, row["cluster"], row["shots"], status_of(row)): row for label in labels for row in clusters[label]}
    # Each cluster gets only the bars it has (a base run has no seen/held-out split), centred on its
    # tick and in the same places in every shot panel.
    present = {name: [s for s in series if any((s[0], name, k, s[1]) in index for k in shots)] for name in names}
    most = max(len(bars) for bars in present.values())
    width = 0.8 / most
    # Wide enough for every bar, capped so the page does not shrink the text to nothing.
    figure = new_figure(min(16.0, max(10.0, 1.2 + len(names) * (0.35 * most + 0.4))), 0.6 + 3.0 * len(shots))
    axes = figure.subplots(len(shots), 1, squeeze=False, sharex=True)[:, 0]
    for ax, k in zip(axes, shots, strict=True):
        top = 100.0
        for i, name in enumerate(names):
            for j, (label, status) in enumerate(present[name]):
                row = index.get((label, name, k, status))
                if row is None or row.get("mean") is None:
                    continue
                mean = 100 * row["mean"]
                below = mean - 100 * row["low"] if row.get("low") is not None else 0.0
                above = 100 * row["high"] - mean if row.get("high") is not None else 0.0
                top = max(top, mean + above)
                ax.bar([i + (j - (len(present[name]) - 1) / 2) * width], [mean], width, color=colours[label],
                       hatch=STATUS_HATCH[status], edgecolor="#333333", linewidth=0.4, yerr=[[below], [above]],
                       capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_ylim(0, top * 1.02)
        ax.set_ylabel(f"{k}-shot score (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(range(len(names)), names, rotation=20 if len(names) > 5 else 0,
                        ha="right" if len(names) > 5 else "center")
    handles = [Patch(facecolor=colours[label], label=label) for label in labels]
    statuses = sorted({status for _, status in series if status is not None}, key=status_order)
    handles += [Patch(facecolor="white", edgecolor="#333333", hatch=STATUS_HATCH[s], label=STATUS_NAMES[s])
                for s in statuses]
    figure.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 3), fontsize=8, frameon=False)
    return figure


def template_means(record: RunRecord) -> dict[tuple[str, int], list[float]]:
    """Per (task, shots): the primary metric of each template, in template order."""
    means: dict[tuple[str, int], list[float]] = {}
    for score in record.ungrouped():
        means.setdefault((score.task, score.shots), []).append(100 * score.metrics[score.primary].mean)
    return means


def template_figure(pairs: list[tuple[RunRecord, list[Sample]]], labels: list[str],
                     colours: dict[str, str]):
    from matplotlib.patches import Patch

    per_run = [template_means(record) for record, _ in pairs]
    shots = sorted({k for means in per_run for _, k in means})
    tasks = sorted({task for means in per_run for task, _ in means})
    width = 0.8 / len(labels)
    figure = new_figure(min(16.0, max(10.0, 1.2 + len(tasks) * (0.4 * len(labels) + 0.4))),
                         0.6 + 3.0 * len(shots))
    axes = figure.subplots(len(shots), 1, squeeze=False, sharex=True)[:, 0]
    for ax, k in zip(axes, shots, strict=True):
        for j, (label, means) in enumerate(zip(labels, per_run, strict=True)):
            data, positions = [], []
            for i, task in enumerate(tasks):
                if (task, k) in means:
                    data.append(means[(task, k)])
                    positions.append(i - 0.4 + width * (j + 0.5))
            if not data:
                continue
            ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=False,
                       boxprops={"facecolor": colours[label], "alpha": 0.55, "linewidth": 0.6},
                       medianprops={"color": "black", "linewidth": 1.2}, whiskerprops={"linewidth": 0.6},
                       capprops={"linewidth": 0.6})
            for position, values in zip(positions, data, strict=True):
                ax.plot([position] * len(values), values, "o", color=colours[label], markersize=2.5,
                        markeredgecolor="black", markeredgewidth=0.3)
        ax.set_ylim(-3, 103)
        ax.set_ylabel(f"{k}-shot score (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(range(len(tasks)), tasks, rotation=30 if len(tasks) > 4 else 0,
                        ha="right" if len(tasks) > 4 else "center")
    axes[-1].set_xlim(-0.6, len(tasks) - 0.4)
    figure.legend(handles=[Patch(facecolor=colours[label], alpha=0.55, label=label) for label in labels],
                  loc="outside upper center", ncols=min(len(labels), 3), fontsize=8, frameon=False)
    return figure


def shots_figure(curves: dict[str, list[dict[str, Any]]], labels: list[str], colours: dict[str, str]):
    figure = new_figure(8.0, 3.8)
    ax = figure.subplots()
    shots = set()
    for label in labels:
        points = sorted((row["shots"], 100 * row["mean"]) for row in curves[label]
                        if row["task"] == "(all)" and row.get("mean") is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colours[label], label=label)
            shots.update(p[0] for p in points)
    ax.set_xticks(sorted(shots))
    # At least ten points of range, so a difference of a fraction of a point does not fill the plot.
    low, high = ax.get_ylim()
    middle = (low + high) / 2
    ax.set_ylim(max(0.0, min(low, middle - 5)), min(100.0, max(high, middle + 5)))
    ax.set_xlabel("shots")
    ax.set_ylabel("mean score (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return figure


def _whisker(value: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """An error bar around `value` (percent) from an interval (fractions), never negative: a
    percentile interval need not contain its point estimate."""
    if low is None or high is None:
        return None
    return [[max(0.0, value - 100 * low)], [max(0.0, 100 * high - value)]]


def scatter_figure(paired: dict[str, list[dict[str, Any]]], labels: list[str]):
    """Per later run, one point per task (and shot count, and label) of `analysis.compare.paired_task_scores`:
    x the baseline's score and y the later run's, on the samples both share."""
    from matplotlib.lines import Line2D

    base = labels[0]
    later = labels[1:]
    columns = min(len(later), 3)
    lines = math.ceil(len(later) / columns)
    figure = new_figure(5.2 * columns + 0.6, 5.0 * lines + 0.4)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[len(later):]:
        ax.set_visible(False)
    shot_counts = sorted({row["shots"] for rows in paired.values() for row in rows})
    markers = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(shot_counts)}
    for ax, label in zip(axes, later, strict=False):
        rows = [row for row in paired.get(label, []) if row.get("a") is not None and row.get("b") is not None]
        by_status = any(status_of(row) is not None for row in rows)
        clusters = sorted({row["cluster"] for row in rows})
        cluster_colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(clusters)}
        if not rows:
            ax.text(50, 50, f"no samples shared with {base}", ha="center", va="center", fontsize=9, color="#555555")
        # One label per spot: shot counts and labels of a task often land on the same point.
        names_at: dict[tuple[float, float], list[str]] = {}
        for row in rows:
            x, y = 100 * row["a"], 100 * row["b"]
            colour = STATUS_COLOURS[status_of(row)] if by_status else cluster_colours[row["cluster"]]
            ax.errorbar([x], [y], xerr=_whisker(x, row.get("a_low"), row.get("a_high")),
                        yerr=_whisker(y, row.get("b_low"), row.get("b_high")), fmt=markers[row["shots"]],
                        color=colour, markersize=6, elinewidth=0.5, ecolor="#c8c8c8", markeredgecolor="black",
                        markeredgewidth=0.4, alpha=0.85)
            names = names_at.setdefault((round(x, 1), round(y, 1)), [])
            if row["task"] not in names:
                names.append(row["task"])
        if len(names_at) <= 30:
            for (x, y), names in names_at.items():
                ax.annotate(", ".join(names), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7,
                            color="#333333")
        ax.plot([0, 100], [0, 100], "--", color="#888888", linewidth=0.8)
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{base} (%, shared samples)")
        ax.set_ylabel(f"{label} (%, shared samples)")
        ax.grid(alpha=0.3)
        keys = sorted({status_of(row) for row in rows}, key=status_order) if by_status else clusters
        handles = [Line2D([], [], marker="o", linestyle="", markeredgecolor="black", markeredgewidth=0.4,
                          color=STATUS_COLOURS[key] if by_status else cluster_colours[key],
                          label=STATUS_NAMES[key] if by_status else key) for key in keys]
        if len(shot_counts) > 1:
            handles += [Line2D([], [], marker=markers[k], linestyle="", color="white", markeredgecolor="black",
                               label=f"{k}-shot") for k in shot_counts]
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="lower right", frameon=True, framealpha=0.8)
    return figure


def sweep_figure(sweep: dict[str, Any] | None):
    assert sweep is not None
    points = sweep["points"]
    xs = [p["n_clusters"] for p in points]
    means = [100 * p["mean"] for p in points]
    figure = new_figure(8.0, 4.0)
    ax = figure.subplots()
    ax.fill_between(xs, [100 * p["low"] for p in points], [100 * p["high"] for p in points], color="#1f77b4",
                    alpha=0.2, linewidth=0, label="interval")
    ax.plot(xs, means, "o-", color="#1f77b4", label="mean")
    previous: set[str] = set()
    for point, mean in zip(points, means, strict=True):
        added = sorted(set(point.get("trained_clusters", [])) - previous)
        previous = set(point.get("trained_clusters", []))
        note = "base" if point["n_clusters"] == 0 else ("+" + ", ".join(added) if added else "")
        if note:
            ax.annotate(note, (point["n_clusters"], mean), xytext=(0, 7), textcoords="offset points",
                        ha="center", fontsize=7, color="#333333")
    ax.set_xticks(xs)
    ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)  # room for the labels of the first and last point
    ax.set_xlabel("training clusters")
    ax.set_ylabel(f"held-out {sweep['metric']} (%)")
    ax.set_title("held out: " + (", ".join(sweep["held_out_clusters"]) or DASH), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return figure


# ---------------------------------------------------------------------------------------------
