"""`harness report`: the HTML page and Markdown summary of real runs, checked as files and in a browser.

Two real runs of the built-in tiny model: the base, and a perturbed copy with a hand-made training
manifest, so its scores carry every seen / held-out label and differ from the base's. The page is
opened in headless Chromium (Debian's package) to check that each plot is drawn and the numbers a
reader looks for are on it; those tests skip when Chromium is not installed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.analysis.compare import compare_runs
from harness.analysis.scores import cluster_scores
from harness.cli import main
from harness.errors import HarnessError
from harness.report.figures import interval, pct, signed
from harness.report.html import build_report, render_html, render_markdown
from harness.report.inputs import check_sweep, load_runs, load_sweep
from harness.seen import TaskRecord, TemplateRecord, TrainingManifest
from harness.tasks.registry import Registry
from harness.tune.manifest import write_manifest
from tests.test_cli import error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS = "parity,compare_numbers,sentiment_lexicon"
FIGURES = ("plot-clusters", "plot-templates", "plot-shots", "plot-scatter", "plot-sweep")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SWEEP = {  # as `harness tune --sweep clusters` writes it: the metric per point, from analysis.overall_score
    "base_model": "tiny-llama", "held_out_clusters": ["lexicon_classification"],
    "order": ["arithmetic", "comparison"], "evaluation": {"tasks": "lexicon_classification", "shots": [0]},
    "points": [
        {"n_clusters": 0, "trained_clusters": [], "checkpoint": "tiny-llama", "run": "runs/clusters-00",
         "metric": "acc", "mean": 0.41, "low": 0.36, "high": 0.46, "clusters": 1, "samples": 24},
        {"n_clusters": 1, "trained_clusters": ["arithmetic"], "checkpoint": "clusters-01", "run": "runs/clusters-01",
         "metric": "acc", "mean": 0.48, "low": 0.43, "high": 0.53, "clusters": 1, "samples": 24},
        {"n_clusters": 2, "trained_clusters": ["arithmetic", "comparison"], "checkpoint": "clusters-02",
         "run": "runs/clusters-02", "metric": "acc", "mean": 0.555, "low": 0.5, "high": 0.61, "clusters": 1,
         "samples": 24},
    ],
}


def _tuned_copy(base: Path, folder: Path) -> Path:
    """The base model with perturbed weights (so its scores differ) and a training manifest that makes
    parity partly seen, compare_numbers a held-out task and sentiment_lexicon a held-out cluster."""
    shutil.copytree(base, folder)
    weights = load_file(folder / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    weights = {name: w + 2.0 * w.std() * torch.randn(w.shape, generator=generator) if w.ndim == 2 else w
               for name, w in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    registry = Registry()

    def trained(name: str, template_ids: set[str]) -> TaskRecord:
        task = registry.get(name)
        templates = tuple(TemplateRecord(t.id, t.hash, True, False, {0: 4}) for t in task.templates
                          if t.id in template_ids)
        return TaskRecord(name, task.cluster, task.hash, "train", 64, 4 * len(templates), templates)

    write_manifest(folder, TrainingManifest(
        base_model=str(base), base_weights_hash=None, mixture_hash="e" * 64, mixture_config={"seed": 0},
        tasks=(trained("parity", {"completion", "q_options", "instr_terse"}),
               trained("compare_length", {"completion"})),
        held_out_requested=("lexicon_classification",), held_out_clusters=("lexicon_classification",),
        seeds={"mixture": 0}, created="2025-01-01T00:00:00Z",
    ))
    return folder


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    tuned = _tuned_copy(tiny_models["tiny-llama"], root / "tuned-model")
    for run_id, model in (("base", tiny_models["tiny-llama"]), ("tuned", tuned)):
        code = main(["run", "--model", str(model), "--tasks", TASKS, "--shots", "0,1", "--limit", "4",
                     "--out", str(root / "runs"), "--run-id", run_id])
        assert code == 0
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(SWEEP))
    return {"base": root / "runs" / "base", "tuned": root / "runs" / "tuned", "sweep": sweep, "root": root}


@pytest.fixture(scope="module")
def report_dir(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-out")
    code = main(["report", str(runs["base"]), str(runs["tuned"]), "--out", str(out), "--sweep", str(runs["sweep"]),
                 "--title", "Tiny <models> & co"])
    assert code == 0
    return out


def _cells(html_text: str, section_id: str) -> list[tuple[str, ...]]:
    """The text of each body row of the table in <section id=...>, cell by cell."""
    section = re.search(rf'<section id="{section_id}">(.*?)</section>', html_text, re.S)
    assert section, f"no section {section_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section.group(1), re.S)
    return [tuple(re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S))
            for row in rows if "<td" in row]


def _figure(html_text: str, figure_id: str) -> str:
    match = re.search(rf'<figure id="{figure_id}">(.*?)</figure>', html_text, re.S)
    assert match, f"no figure {figure_id}"
    return match.group(1)


def _expected_numbers(runs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One cluster row and the overall comparison row as the page must show them, from the analysis itself."""
    base, tuned = load_run_pair(runs)
    row = next(r for r in cluster_scores(*base) if r["cluster"] == "comparison" and r["shots"] == 0)
    cluster = ("comparison", "0", "base", "unlabelled", row["metric"], pct(row["mean"]),
               interval(row["low"], row["high"]), str(row["tasks"]), str(row["samples"]))
    overall = compare_runs(base, tuned, labels=("base", "tuned"))["overall"]
    comparison = ("(overall)", "0, 1", overall["metric"], pct(overall["a"]), pct(overall["b"]),
                  signed(overall["delta"]), interval(overall["low"], overall["high"], "+"),
                  "*" if overall["significant"] else "", str(overall["n"]))
    return cluster, comparison


def load_run_pair(runs):
    (_, base_record, base_samples), (_, tuned_record, tuned_samples) = load_runs([runs["base"], runs["tuned"]])
    return (base_record, base_samples), (tuned_record, tuned_samples)


def test_page_is_one_self_contained_file(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for external in ("http://", "https://", "<script", "<link", "<img", "<iframe", "@import", " src=", "file:"):
        assert external not in page.lower(), external
    assert re.findall(r"url\((?!#)", page) == []  # only in-page references (SVG clip paths)
    assert re.findall(r'href="(?!#)', page) == []
    # Text is escaped: the title's markup characters are shown, not parsed.
    assert "<title>Tiny &lt;models&gt; &amp; co</title>" in page and "<models>" not in page
    # Every id is unique, although five SVGs each define glyphs and clip paths.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_every_plot_is_drawn_with_a_caption(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    for figure_id in FIGURES:
        figure = _figure(page, figure_id)
        assert figure.count("<svg") == 1, figure_id
        assert len(re.findall(r"<(?:path|use|rect)\b", figure)) > 40, figure_id
        assert "<figcaption>" in figure
    # The bars are hatched by seen status: the tuned run's labels reach the plot.
    assert "<pattern" in _figure(page, "plot-clusters")


def test_tables_show_the_analysis_numbers(runs, report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    cluster, comparison = _expected_numbers(runs)
    # 3 tasks x 6 templates x 2 shot counts x 4 rows per run.
    assert [(row[0], row[3], row[4], row[5], row[6]) for row in _cells(page, "table-runs")] == [
        ("base", "\u2013", "3", "0, 1", "144"), ("tuned", "held out: lexicon_classification", "3", "0, 1", "144")]
    assert cluster in _cells(page, "table-clusters")
    assert comparison == _cells(page, "table-compare-1")[0]
    statuses = {row[3] for row in _cells(page, "table-clusters") if row[2] == "tuned"}
    assert statuses == {"seen", "held-out template", "held-out task", "held-out cluster"}
    assert [row[0] for row in _cells(page, "table-gap")] == ["tuned", "tuned"]
    # The tuned run against the base split by its labels: each label's overall row first, then its clusters.
    from harness.analysis.compare import compare_by_seen_status

    expected = compare_by_seen_status(*load_run_pair(runs), labels=("base", "tuned"))
    generalization = _cells(page, "table-generalization-1")
    assert [(row[0], row[1]) for row in generalization] == [
        (r["seen_status"].replace("_", " "), r["cluster"]) for r in expected]
    # The report's one signed format: a delta that rounds to zero is "+0.0", never "-0.0".
    assert [row[6] for row in generalization] == [signed(r["delta"]) for r in expected]
    assert {row[1] for row in _cells(page, "table-sensitivity")} == set(TASKS.split(","))
    assert [(row[0], row[1], row[3], row[4]) for row in _cells(page, "table-sweep")] == [
        ("0", "(base model)", "41.0", "[36.0, 46.0]"), ("1", "arithmetic", "48.0", "[43.0, 53.0]"),
        ("2", "arithmetic, comparison", "55.5", "[50.0, 61.0]")]


def test_markdown_has_the_same_tables(runs, report_dir):
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    cluster, comparison = _expected_numbers(runs)
    assert markdown.startswith("# Tiny &lt;models&gt; &amp; co\n")
    for heading in ("## Runs", "## Score per cluster", "## tuned against base: clusters",
                    "## tuned against base: tasks", "## Generalization gap", "## Template sensitivity",
                    "## Cluster sweep"):
        assert f"\n{heading}\n" in markdown, heading
    assert "| " + " | ".join(cluster) + " |" in markdown
    assert "| " + " | ".join(comparison) + " |" in markdown
    assert "| cluster | shots | run | seen | metric | mean | 95% interval | tasks | samples |\n|---|---:|" in markdown


def test_same_inputs_give_the_same_bytes(runs, report_dir, tmp_path):
    """Rebuilt in another process with another hash seed: set order or SVG ids must not leak into the bytes."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-m", "harness", "report", str(runs["base"]), str(runs["tuned"]), "--out", str(tmp_path),
         "--sweep", str(runs["sweep"] / "sweep.json"), "--title", "Tiny <models> & co"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("report.html", "report.md"):
        assert (tmp_path / name).read_bytes() == (report_dir / name).read_bytes(), name


def test_cli_prints_the_key_tables(runs, tmp_path, capsys):
    assert main(["report", str(runs["base"]), str(runs["tuned"]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "A = base, B = tuned: per cluster" in out and "(overall)" in out
    assert "generalization gap" in out and "held out cluster" in out
    assert "left out plot-sweep: no --sweep given: no sweep curve" in out
    assert f"report: {tmp_path / 'report.html'}" in out


def test_plots_that_do_not_apply_are_left_out_with_a_reason(runs):
    """One run at one shot count: no shots curve, no scatter, no comparison; no sweep given."""
    (record, samples), _ = load_run_pair(runs)
    record = replace(record, scores=[s for s in record.scores if s.shots == 0])
    report = build_report([("only", record, [s for s in samples if s.shots == 0])], None)
    assert [plot.id for plot in report.plots] == ["plot-clusters", "plot-templates"]
    omitted = dict(report.omitted)
    assert omitted["plot-shots"] == "one shot count (0-shot): no shots curve"
    assert omitted["plot-scatter"] == "one run: no base-against-tuned scatter"
    assert omitted["plot-sweep"] == "no --sweep given: no sweep curve"
    assert "no generalization gap" in omitted["generalization gap"]
    page = render_html(report)
    assert 'id="plot-shots"' not in page and "<li>plot-shots: one shot count (0-shot): no shots curve</li>" in page
    assert "- plot-scatter: one run: no base-against-tuned scatter" in render_markdown(report)


def test_runs_sharing_no_samples_get_a_note_not_a_comparison(runs):
    (base_record, base_samples), (tuned_record, tuned_samples) = load_run_pair(runs)
    tuned_record = replace(tuned_record, scores=[s for s in tuned_record.scores if s.task == "parity"])
    base_record = replace(base_record, scores=[s for s in base_record.scores if s.task != "parity"])
    report = build_report([("a", base_record, [s for s in base_samples if s.task != "parity"]),
                           ("b", tuned_record, [s for s in tuned_samples if s.task == "parity"])], None)
    assert not any(grid.id.startswith("table-compare") for grid in report.tables)
    assert "share no samples" in dict(report.omitted)["comparison base vs tuned"]
    assert "plot-scatter" in [plot.id for plot in report.plots]


def test_significant_deltas_are_marked(runs):
    """A run that answers every sample right beats the base beyond noise: starred and shaded green."""
    (record, samples), _ = load_run_pair(runs)
    perfect_record = replace(record, run_id="perfect", scores=[
        replace(score, metrics={name: replace(metric, mean=1.0) for name, metric in score.metrics.items()})
        for score in record.scores])
    perfect_samples = [replace(sample, metrics={name: 1.0 for name in sample.metrics}) for sample in samples]
    report = build_report([("base", record, samples), ("perfect", perfect_record, perfect_samples)], None)
    page = render_html(report)
    overall = _cells(page, "table-compare-1")[0]
    assert overall[0] == "(overall)" and overall[5].startswith("+") and overall[7] == "*"
    section = re.search(r'<section id="table-compare-1">(.*?)</section>', page, re.S).group(1)
    starred = [row for row in _cells(page, "table-compare-1") if row[7] == "*"]
    assert section.count('<tr class="up">') == len(starred) and '<tr class="down">' not in section
    assert "| (overall) | 0, 1 | acc |" in render_markdown(report)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda root: root / "no-such-run", "no-such-run: no such run directory"),
    (lambda root: _incomplete(root), "half: no run.json; the run is incomplete"),
])
def test_missing_or_incomplete_run_is_one_line(runs, tmp_path, capsys, make, expected):
    code = main(["report", str(runs["base"]), str(make(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "out").exists()


def _incomplete(root: Path) -> Path:
    (root / "half").mkdir()
    (root / "half" / "spec.json").write_text("{}")
    (root / "half" / "samples.jsonl").write_text("")
    return root / "half"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s["points"][1].update(mean="high"), "field 'points[1].mean' must be a number"),
    (lambda s: s["points"][0].pop("metric"), "field 'points[0].metric' must be a string (or give 'metric' once"),
    (lambda s: s["points"][2].update(high=None), "field 'points[2].high' must be a number"),
    (lambda s: s.update(points=[]), "field 'points' must be a non-empty list"),
])
def test_bad_sweep_file_names_the_field(runs, tmp_path, capsys, edit, expected):
    sweep = copy.deepcopy(SWEEP)
    edit(sweep)
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    with pytest.raises(HarnessError, match=re.escape(expected)):
        load_sweep(tmp_path)
    assert main(["report", str(runs["base"]), "--out", str(tmp_path / "out"), "--sweep", str(tmp_path)]) == 2
    assert f"sweep.json: {expected}" in error_line(capsys)


def test_sweep_metric_may_be_given_once_at_the_top_level():
    sweep = copy.deepcopy(SWEEP)
    for point in sweep["points"]:
        del point["metric"]
    sweep["metric"] = "acc_norm"
    sweep["points"].reverse()
    checked = check_sweep(sweep)
    assert [p["metric"] for p in checked["points"]] == ["acc_norm"] * 3
    assert [p["n_clusters"] for p in checked["points"]] == [0, 1, 2]
    assert check_sweep(SWEEP)["metric"] == "acc"


# --- in a browser -----------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                                    "chromium; .ci/run installs it)")


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


@needs_chromium
def test_screenshot_shows_the_plots(report_dir, tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "page.png"
    result = _chromium(tmp_path / "profile", f"--screenshot={png}", "--window-size=1400,6000",
                       "--hide-scrollbars", (report_dir / "report.html").as_uri())
    assert png.exists(), result.stderr[-2000:]
    assert _png_size(png) == (1400, 6000)
    pixels = imread(png)[:, :, :3]
    assert pixels.std() > 0.05, "the screenshot is a blank page"
    # The first run's colour (#1f77b4) fills bars and boxes: the inline SVG was rendered, not just the text.
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.02, axis=2)
    assert blue.sum() > 2000
    # ...and the page goes on well below the first screenful, where the later plots and the tables are.
    background = pixels[5, 5]
    rows_with_ink = np.nonzero((np.abs(pixels - background) > 0.2).any(axis=(1, 2)))[0]
    assert rows_with_ink.max() > 3000


@needs_chromium
def test_browser_dom_has_every_plot_and_the_key_numbers(runs, report_dir, tmp_path):
    result = _chromium(tmp_path / "profile", "--dump-dom", (report_dir / "report.html").as_uri())
    dom = result.stdout
    assert "</html>" in dom, result.stderr[-2000:]
    for figure_id in FIGURES:
        figure = _figure(dom, figure_id)
        assert "<svg" in figure, figure_id
        assert len(re.findall(r"<(?:path|use|rect)\b", figure)) > 40, figure_id
    cluster, comparison = _expected_numbers(runs)
    assert cluster in _cells(dom, "table-clusters")
    assert _cells(dom, "table-compare-1")[0] == comparison
    assert "one shot count" not in dom  # every plot applied, so no note says one was left out
