"""The report's view of a score's spread over a task's formats: an ECDF and quantiles per (task, shots),
and which template tags move the score.

With dozens of format variants per task (`harness templates vary`), a single score per task hides how
much of it is the wording: the same model can read 40% or 70% depending on the enumerator or the
separator. So for each run and (task, shots) the page shows the distribution of the score over every
template, as an empirical CDF (one line per run; the hand-written templates marked on it, since they
are the ones other harnesses report), its quantiles with intervals, and the tags' estimated effects.

All numbers come from `harness.analysis.budget.estimate_budget`. On a full run (every (template, row)
cell computed) its template scores are the observed means exactly, and its intervals are a bootstrap
over rows; on a budgeted run (some cells left out, read from `CellMatrix.computed`, never from a
run.json section) the scores are estimates, and the caption and tables say so, with how many cells
they rest on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.analysis.budget import BudgetEstimate, Estimate, TagEffect, estimate_budget
from harness.analysis.budget_matrix import run_matrices
from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.report.figures import new_figure
from harness.report.formats import interval, pct, signed
from harness.report.grids import CONFIDENCE, Grid, joined

MIN_TEMPLATES = 3
"""Fewer templates than this make no distribution worth a curve or quantiles."""
RESAMPLES = 200
"""The estimator refits its model on every resample (about 0.5-1 s per (task, shots) at 200), so it
gets fewer than the report's other bootstraps; the tables' notes say how many."""
TOP_EFFECTS = 10
"""Tag effects shown per (task, shots) and run: the largest by absolute size."""
PLOT_ID = "plot-spread"


@dataclass(frozen=True)
class Spread:
    """One run's estimate for one (task, shots), with which of its templates are hand-written (in the
    estimate's template order): a generated variant's tags say `extra.generated: true`."""

    label: str
    estimate: BudgetEstimate
    hand_written: tuple[bool, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.estimate.task, self.estimate.shots)

    @property
    def budgeted(self) -> bool:
        return self.estimate.computed < self.estimate.cells

    def provenance(self) -> str:
        """How the scores were obtained, as the caption and the tables write it."""
        if self.budgeted:
            return f"estimated from {self.estimate.computed} of {self.estimate.cells} cells"
        return f"computed ({self.estimate.cells} cells)"


def _hand_written(tags: Mapping[str, Any]) -> bool:
    extra = tags.get("extra")
    return not (isinstance(extra, Mapping) and extra.get("generated") is True)


def spreads(pairs: list[tuple[RunRecord, list[Sample]]], labels: list[str], *,
            seed: int = 0, estimator: str = "plug-in") -> tuple[list[Spread], list[tuple[str, str]]]:
    """Every run's estimate per (task, shots) with at least `MIN_TEMPLATES` templates, and what was
    left out and why (one entry per run, naming its tasks, so a suite of two-template tasks does not
    fill the page with notes)."""
    found: list[Spread] = []
    omitted: list[tuple[str, str]] = []
    for label, (record, samples) in zip(labels, pairs, strict=True):
        try:
            matrices = run_matrices(record, samples)
        except HarnessError as exc:
            omitted.append((f"{PLOT_ID} ({label})", str(exc)))
            continue
        few: list[str] = []
        for (task, shots), matrix in sorted(matrices.items()):
            if len(matrix.templates) < MIN_TEMPLATES:
                few.append(f"{task} ({shots}-shot, {len(matrix.templates)})")
                continue
            try:
                estimate = estimate_budget(matrix, seed=seed, resamples=RESAMPLES, confidence=CONFIDENCE,
                                           estimator=estimator)
            except HarnessError as exc:
                omitted.append((f"{PLOT_ID} ({label}, {task}, {shots}-shot)", str(exc)))
                continue
            found.append(Spread(label, estimate, tuple(_hand_written(tags) for tags in matrix.tags)))
        if few:
            omitted.append((f"{PLOT_ID} ({label})", f"fewer than {MIN_TEMPLATES} templates, no distribution over "
                                                    f"formats: {joined(few)}"))
    return found, omitted


def ecdf_points(scores: list[float], templates: tuple[str, ...]) -> list[tuple[float, float, int]]:
    """(score in %, fraction of templates at or below it, template index) in curve order: ties are
    broken by template id, so every template, hand-written ones included, has its own step."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], templates[i]))
    return [(100 * scores[i], (rank + 1) / len(order), i) for rank, i in enumerate(order)]


def spread_caption(found: list[Spread], labels: list[str]) -> str:
    """The figure's caption: what a curve is, and per run whether its scores are computed or estimated."""
    provenance = []
    for label in labels:
        mine = [s for s in found if s.label == label]
        if not mine:
            continue
        computed, cells = sum(s.estimate.computed for s in mine), sum(s.estimate.cells for s in mine)
        if any(s.budgeted for s in mine):
            provenance.append(f"{label}: estimated from {computed} of {cells} cells (dashed line; the estimator's "
                              "scores, see the table for each task)")
        else:
            provenance.append(f"{label}: computed ({cells} cells)")
    return ("Empirical CDF of the primary metric over every template of a task (hand-written and generated "
            "format variants): x is a template's score, y the fraction of templates scoring at most that; one "
            "line per run, one panel per task and shot count. A steep curve means the format matters little. "
            "Diamonds mark the hand-written templates, plain steps the generated variants. Scores: "
            + "; ".join(provenance) + ".")


def spread_figure(found: list[Spread], labels: list[str], colours: dict[str, str]):
    from matplotlib.lines import Line2D

    keys = sorted({s.key for s in found})
    columns = min(len(keys), 3)
    lines = -(-len(keys) // columns)
    figure = new_figure(4.6 * columns + 0.6, 3.2 * lines + 0.6)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    by_key = {(s.label, s.key): s for s in found}
    for panel, (ax, (task, shots)) in enumerate(zip(axes, keys, strict=False)):
        drawn = [by_key[(label, (task, shots))] for label in labels if (label, (task, shots)) in by_key]
        values = [100 * t.score.value for s in drawn for t in s.estimate.templates]
        # At least ten points of range, so formats a fraction of a point apart do not fill the panel.
        middle = (min(values) + max(values)) / 2
        low = max(0.0, min(min(values) - 2, middle - 5))
        high = min(100.0, max(max(values) + 2, middle + 5))
        for spread in drawn:
            points = ecdf_points([t.score.value for t in spread.estimate.templates],
                                 tuple(t.template for t in spread.estimate.templates))
            colour = colours[spread.label]
            ax.step([low] + [p[0] for p in points] + [high], [0.0] + [p[1] for p in points] + [1.0], where="post",
                    color=colour, linewidth=1.4, linestyle="--" if spread.budgeted else "-")
            marked = [p for p in points if spread.hand_written[p[2]]]
            if marked:  # an SVG group id per (panel, run), so a reader's tools (and the tests) find the marks
                ax.plot([p[0] for p in marked], [p[1] for p in marked], "D", color=colour, markersize=5,
                        markeredgecolor="black", markeredgewidth=0.6, linestyle="",
                        gid=f"hand-written-{panel}-{labels.index(spread.label)}")
        ax.set_xlim(low, high)
        ax.set_ylim(0, 1.04)
        ax.set_title(f"{task} ({shots}-shot)", fontsize=9)
        ax.set_xlabel("score (%)", fontsize=8)
        ax.set_ylabel("fraction of templates", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    budgeted = {s.label for s in found if s.budgeted}
    handles = [Line2D([], [], color=colours[label], linestyle="--" if label in budgeted else "-",
                      label=f"{label} (estimated)" if label in budgeted else label)
               for label in labels if any(s.label == label for s in found)]
    handles.append(Line2D([], [], marker="D", linestyle="", color="white", markeredgecolor="black",
                          label="hand-written template"))
    figure.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), fontsize=8,
                  frameon=False)
    return figure


def _stat(estimate: Estimate) -> str:
    return f"{pct(estimate.value)} {interval(estimate.low, estimate.high)}"


def spread_grid(found: list[Spread], labels: list[str]) -> Grid:
    """Per (task, shots) and run: the score's mean, quantiles, best and worst template over formats."""
    rows = []
    ordered = sorted(found, key=lambda s: (s.key, labels.index(s.label)))
    for spread in ordered:
        estimate, distribution = spread.estimate, spread.estimate.distribution
        quantiles = [_stat(q) for _, q in distribution.quantiles]
        rows.append((estimate.task, str(estimate.shots), spread.label,
                     f"{len(estimate.templates)} ({sum(spread.hand_written)} hand-written)", spread.provenance(),
                     estimate.metric, _stat(distribution.mean), *quantiles,
                     f"{_stat(distribution.best)} {distribution.best_template}",
                     f"{_stat(distribution.worst)} {distribution.worst_template}"))
    names = [f"q{round(100 * q):02d}" for q, _ in ordered[0].estimate.distribution.quantiles] if ordered else []
    return Grid("table-spread", "Scores over formats",
                ("task", "shots", "run", "templates", "scores", "metric", "mean", *names, "best", "worst"),
                tuple(rows), frozenset({1}),
                note=f"The primary metric's distribution over each task's templates: its mean, quantiles, best and "
                     f"worst template, each with a {CONFIDENCE:.0%} interval from a bootstrap over rows ({RESAMPLES} "
                     "resamples). Scores computed: every (template, row) cell was run, and the statistics are the "
                     "templates' observed means. Estimated: a budgeted run computed only some cells, and the "
                     "template scores are the budget estimator's (observed cells plus a logistic model of "
                     "template and row, with the template tags as covariates).")


def ranked_effects(spread: Spread) -> list[TagEffect]:
    """The run's `TOP_EFFECTS` largest tag effects for the (task, shots), largest |effect| first."""
    return sorted(spread.estimate.tag_effects, key=lambda e: (-abs(e.effect.value), e.tag, e.level))[:TOP_EFFECTS]


def _level(text: str) -> str:
    """A tag value as a cell shows it: quoted where spaces at its ends (a separator " -") would vanish."""
    return f'"{text}"' if text != text.strip() or not text else text


def effects_grid(found: list[Spread], labels: list[str]) -> Grid | None:
    """Which format features move the score, per (task, shots) and run; None when no task has any."""
    rows: list[tuple[str, ...]] = []
    marks: list[str] = []
    for spread in sorted(found, key=lambda s: (s.key, labels.index(s.label))):
        for effect in ranked_effects(spread):
            value = effect.effect
            rows.append((spread.estimate.task, str(spread.estimate.shots), spread.label, effect.tag,
                         f"{_level(effect.level)} vs {_level(effect.reference)}", signed(value.value),
                         interval(value.low, value.high, "+"), str(effect.templates), spread.provenance()))
            excludes_zero = value.low > 0 or value.high < 0
            marks.append(("up" if value.value > 0 else "down") if excludes_zero else "")
    if not rows:
        return None
    return Grid("table-tag-effects", "Which format features move the score",
                ("task", "shots", "run", "tag", "level vs reference", "effect", f"{CONFIDENCE:.0%} interval",
                 "templates", "scores"), tuple(rows), frozenset({1, 5, 7}), marks=tuple(marks),
                note=f"Each tag's effect on the score in points: every template's tag set to the level against set "
                     "to the reference, all else kept, averaged over rows and templates (the budget estimator's "
                     f"covariate model), with a {CONFIDENCE:.0%} interval ({RESAMPLES} resamples over rows); "
                     f"templates: how many have the level. The {TOP_EFFECTS} largest by absolute effect per task "
                     "and run, largest first; shaded where the interval excludes zero.")


def spread_data(found: list[Spread]) -> list[dict[str, Any]]:
    """The numbers behind the section, for `Report.data`."""
    return [{"run": s.label, "task": s.estimate.task, "shots": s.estimate.shots, "metric": s.estimate.metric,
             "cells": s.estimate.cells, "computed": s.estimate.computed, "budgeted": s.budgeted,
             "templates": [{"template": t.template, "score": t.score.value, "low": t.score.low,
                            "high": t.score.high, "estimated": t.estimated, "hand_written": hand}
                           for t, hand in zip(s.estimate.templates, s.hand_written, strict=True)],
             "mean": s.estimate.distribution.mean.value,
             "quantiles": {q: e.value for q, e in s.estimate.distribution.quantiles},
             "tag_effects": [{"tag": e.tag, "level": e.level, "reference": e.reference, "effect": e.effect.value,
                              "low": e.effect.low, "high": e.effect.high, "templates": e.templates}
                             for e in s.estimate.tag_effects]}
            for s in found]


def spread_omission(found: list[Spread]) -> str | None:
    """Why the figure is left out, or None when it is drawn."""
    return None if found else f"no task has {MIN_TEMPLATES} or more templates: no distribution over formats"

