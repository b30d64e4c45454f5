"""The report's "Scores over formats" section: the ECDF of a task's scores over its templates (hand-written
ones marked), the quantile table, the tag-effects table, on a full run and a budgeted one.

The runs are built by hand (record and samples), as `harness run` would write them for a task with two
hand-written templates and six generated format variants, from a known logistic model in which the
"(a)" enumerator helps; the budgeted run is the full run with only a design's cells kept.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.budget import estimate_budget
from harness.analysis.budget_matrix import run_matrices
from harness.eval.budget_design import design_cells
from harness.eval.record import MetricScore, RunRecord, RunSpec, Sample, ScoreEntry
from harness.report.formats import interval, pct, signed
from harness.report.html import build_report, render_html, render_markdown
from harness.report.spread import RESAMPLES, TOP_EFFECTS, ecdf_points

ROWS = [f"r{i:02d}" for i in range(40)]
HAND = {"completion": {"options": False, "style": "completion", "extra": {}},
        "q_options": {"options": True, "style": "question", "extra": {}}}


def _variant(enumerator: str, separator: str, casing: str) -> dict:
    return {"options": True, "style": "question",
            "extra": {"generated": True, "format": {"enumerator": enumerator, "separator": separator,
                                                    "casing": casing, "source": "q_options"}}}


VARIANTS = {f"q_options-v{i}": _variant(e, s, c) for i, (e, s, c) in enumerate(
    [("(a)", ":", "lower"), ("A.", ":", "upper"), ("(a)", " -", "upper"), ("A.", " -", "lower"),
     ("(a)", ":", "upper"), ("A.", " -", "upper")], start=1)}
TAGS = {**HAND, **VARIANTS}


def _values(seed: int, templates: dict[str, dict], rows: list[str]) -> dict[str, np.ndarray]:
    """0/1 values from sigmoid(theta_template - beta_row), where the "(a)" enumerator adds 1.2 logits."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(0, 1.2, len(rows))
    values = {}
    for template, tags in templates.items():
        enumerator = tags["extra"].get("format", {}).get("enumerator")
        theta = 0.2 + (1.2 if enumerator == "(a)" else 0.0) + rng.normal(0, 0.2)
        values[template] = (rng.random(len(rows)) < 1 / (1 + np.exp(-(theta - beta)))).astype(float)
    return values


def make_run(run_id: str, tasks: dict[str, dict[str, dict]], *, seed: int = 0, budget: float | None = None,
             shots: int = 0) -> tuple[RunRecord, list[Sample]]:
    """A record and its samples for `tasks` (name -> template -> tags); with `budget`, only the cells of
    a budget design are kept, and the record's scores are the means of those, as a budgeted run's are."""
    samples, scores = [], []
    for index, (task, templates) in enumerate(tasks.items()):
        values = _values(seed + index, templates, ROWS)
        kept = (set(design_cells(list(templates), ROWS, budget, seed)) if budget is not None
                else {(t, r) for t in templates for r in ROWS})
        for template, tags in templates.items():
            mine = [Sample(task, "formats", template, f"{template}-hash", shots, row, [], f"{task} {template} {row}",
                           {"acc": float(value)}, answer_index=0)
                    for row, value in zip(ROWS, values[template], strict=True) if (template, row) in kept]
            samples += mine
            mean = float(np.mean([s.metrics["acc"] for s in mine]))
            scores.append(ScoreEntry(task, "formats", template, f"{template}-hash", tags, shots, len(mine),
                                     {"acc": MetricScore(mean, 0.0)}, primary_metric="acc"))
    spec = RunSpec("0.1.0", {"model": f"models/{run_id}"}, {"seed": 0},
                   [{"name": task, "cluster": "formats", "kind": "choice", "metrics": ["acc"]} for task in tasks])
    return RunRecord(spec, run_id, "complete", "none", {"samples": len(samples)}, scores), samples


def _cells(page: str, section_id: str) -> list[tuple[str, ...]]:
    section = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert section, f"no section {section_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section.group(1), re.S)
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S))
            for row in rows if "<td" in row]


TASKS = {"formats": TAGS, "pair": {"completion": HAND["completion"], "q_options": HAND["q_options"]}}


def two_runs() -> list[tuple[str, RunRecord, list[Sample]]]:
    full = make_run("full", TASKS)
    budgeted = make_run("budgeted", TASKS, budget=0.4)
    return [("runs/full", *full), ("runs/budgeted", *budgeted)]


@pytest.fixture(scope="module")
def report():
    return build_report(two_runs(), None, seed=0)


@pytest.fixture(scope="module")
def page(report) -> str:
    return render_html(report)


def test_the_section_draws_one_ecdf_panel_per_task_with_the_hand_written_templates_marked(report, page):
    section = re.search(r'<section id="formats">(.*?)</section>\n<section id="tables">', page, re.S)
    assert section and "<h2>Scores over formats</h2>" in section.group(1)
    figure = re.search(r'<figure id="plot-spread">(.*?)</figure>', section.group(1), re.S).group(1)
    assert figure.count("<svg") == 1
    # One group of markers per (panel, run): "formats" has 2 hand-written templates of 8, on both runs.
    for run in (0, 1):
        group = re.search(rf'<g id="plot-spread-hand-written-0-{run}">(.*?)</g>', figure, re.S)
        assert group, run
        assert group.group(1).count("<use") == 2
    assert "plot-spread-hand-written-0-2" not in figure  # the two-template task has no panel
    caption = re.search(r"<figcaption>(.*?)</figcaption>", figure, re.S).group(1)
    assert "full: computed (320 cells)" in caption
    assert "budgeted: estimated from 128 of 320 cells" in caption
    assert "Diamonds mark the hand-written templates" in caption
    assert [plot.id for plot in report.formats] == ["plot-spread"]
    assert "plot-spread" not in [plot.id for plot in report.plots]
    omitted = dict(report.omitted)
    assert omitted["plot-spread (full)"] == ("fewer than 3 templates, no distribution over formats: "
                                             "pair (0-shot, 2)")


def test_ecdf_points_step_once_per_template_in_score_order():
    points = ecdf_points([0.5, 0.25, 0.5, 1.0], ("d", "c", "a", "b"))
    assert points == [(25.0, 0.25, 1), (50.0, 0.5, 2), (50.0, 0.75, 0), (100.0, 1.0, 3)]


def test_quantiles_of_a_full_run_are_numpys_over_its_template_means(page):
    record, _ = make_run("full", TASKS)
    means = {s.template: s.metrics["acc"].mean for s in record.ungrouped() if s.task == "formats"}
    values = np.array(list(means.values()))
    rows = {row[2]: row for row in _cells(page, "table-spread")}
    assert set(rows) == {"full", "budgeted"}  # only the task with 3+ templates
    full = rows["full"]
    assert full[:6] == ("formats", "0", "full", "8 (2 hand-written)", "computed (320 cells)", "acc")
    numbers = [cell.split(" ")[0] for cell in full[6:]]
    assert numbers[:6] == [pct(float(np.mean(values)))] + [pct(float(np.quantile(values, q)))
                                                           for q in (0.05, 0.25, 0.5, 0.75, 0.95)]
    best = max(means, key=lambda t: (means[t], t))
    worst = min(means, key=lambda t: (means[t], t))
    assert numbers[6:] == [pct(means[best]), pct(means[worst])]
    assert full[-2].endswith(f"] {best}") and full[-1].endswith(f"] {worst}")
    # Each statistic carries its interval, which holds the value.
    for cell in full[6:]:
        value, low, high = (float(x) for x in re.match(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", cell).groups())
        assert low <= value <= high


def test_a_budgeted_run_is_labelled_as_estimated_with_the_estimators_numbers(page):
    record, samples = make_run("budgeted", TASKS, budget=0.4)
    matrix = run_matrices(record, samples)[("formats", 0)]
    assert not matrix.computed.all()
    estimate = estimate_budget(matrix, seed=0, resamples=RESAMPLES)
    row = next(r for r in _cells(page, "table-spread") if r[2] == "budgeted")
    assert row[4] == f"estimated from {int(matrix.computed.sum())} of {matrix.computed.size} cells"
    distribution = estimate.distribution
    assert row[6] == f"{pct(distribution.mean.value)} {interval(distribution.mean.low, distribution.mean.high)}"
    # The estimate differs from the naive means over computed cells that the record holds.
    naive = np.mean([s.metrics["acc"].mean for s in record.ungrouped() if s.task == "formats"])
    assert distribution.mean.value != pytest.approx(naive, abs=1e-9)
    assert all(r[-1] == row[4] for r in _cells(page, "table-tag-effects") if r[2] == "budgeted")
    # The page's subtitle states both resample counts: the comparisons' and the estimates'.
    assert f"(1000 resamples, {RESAMPLES} for the estimates over formats, seed" in page


def quoted(level: str) -> str:
    return f'"{level}"' if level != level.strip() else level


def test_tag_effects_are_sorted_by_size_and_match_the_estimator(page):
    rows = _cells(page, "table-tag-effects")
    assert {(r[0], r[2]) for r in rows} == {("formats", "full"), ("formats", "budgeted")}
    record, samples = make_run("full", TASKS)
    estimate = estimate_budget(run_matrices(record, samples)[("formats", 0)], seed=0, resamples=RESAMPLES)
    expected = sorted(estimate.tag_effects, key=lambda e: (-abs(e.effect.value), e.tag, e.level))[:TOP_EFFECTS]
    full = [r for r in rows if r[2] == "full"]
    assert [(r[3], r[4], r[5], r[6], r[7]) for r in full] == [
        (e.tag, f"{quoted(e.level)} vs {quoted(e.reference)}", signed(e.effect.value),
         interval(e.effect.low, e.effect.high, "+"), str(e.templates)) for e in expected]
    for group in ("full", "budgeted"):
        sizes = [abs(float(r[5])) for r in rows if r[2] == group]
        assert sizes == sorted(sizes, reverse=True) and 0 < len(sizes) <= TOP_EFFECTS
    # The planted effect: "A." against "(a)" (the reference, as the most common level, ties broken by
    # name) is the largest, negative, and its interval excludes zero; three variants use "A.".
    top = full[0]
    assert (top[3], top[4], top[7]) == ("format.enumerator", "A. vs (a)", "3") and float(top[5]) < -10
    assert float(top[6].strip("[]").split(", ")[1]) < 0
    # A separator with a space at its end is quoted, so the space stays visible.
    assert ": vs \" -\"" in {r[4] for r in full}


def test_markdown_carries_the_tables(report):
    markdown = render_markdown(report)
    assert "\n## Scores over formats\n" in markdown and "\n## Which format features move the score\n" in markdown
    assert "| formats | 0 | budgeted | 8 (2 hand-written) | estimated from 128 of 320 cells | acc |" in markdown
    assert "plot-spread" in markdown  # named among the plots on the HTML page


def test_no_task_with_three_templates_leaves_the_section_out_with_a_reason():
    record, samples = make_run("pairs", {"pair": TASKS["pair"]})
    report = build_report([("runs/pairs", record, samples)], None)
    assert report.formats == ()
    assert not any(grid.id in ("table-spread", "table-tag-effects") for grid in report.tables)
    assert "no task has 3 or more templates" in dict(report.omitted)["plot-spread"]
    assert '<section id="formats">' not in render_html(report)


def page_digest() -> str:
    """The page's sha256, built from scratch (called in a second process by the test below)."""
    report = build_report(two_runs(), None, seed=0)
    return hashlib.sha256((render_html(report) + render_markdown(report)).encode()).hexdigest()


def test_same_inputs_give_the_same_bytes(page, report):
    here = hashlib.sha256((page + render_markdown(report)).encode()).hexdigest()
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    code = "from tests.test_report_spread import page_digest; print(page_digest())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == here
