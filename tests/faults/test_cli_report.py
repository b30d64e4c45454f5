"""Faults of the command line and the report: silence off a terminal, a row out of range, one number
shown as two, names read as rich markup, and data folders passed over in silence."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from harness import commands
from harness.analysis.compare import compare_runs
from harness.analysis.scores import cluster_scores, shots_curve, task_scores
from harness.cli import main
from harness.engine.scripted import ScriptedBackend
from harness.eval.config import RunConfig
from harness.eval.run import run
from harness.progress import INTERVAL_VARIABLE, StageProgress
from harness.report.figures import scatter_figure
from harness.report.formats import pct
from harness.report.html import build_report, render_html, render_markdown
from harness.report.inputs import load_runs
from harness.report.terminal import (
    cluster_table,
    comparison_table,
    comparison_task_table,
    score_table,
    seen_cluster_table,
)
from harness.tasks.registry import Registry
from harness.tasks.rows import load_split
from harness.tune.trainer import Progress as TrainProgress
from tests.test_registry import TASK, make_task


def _plain_console() -> tuple[Console, io.StringIO]:
    """A console as a log file or CI sees it: not a terminal."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    assert not console.is_terminal
    return console, buffer


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _step(step: int, steps: int, loss: float) -> TrainProgress:
    return TrainProgress(step=step, steps=steps, loss=loss, lr=1e-4, tokens_seen=100 * step, tokens_per_s=250.0)


# ---------------------------------------------------------------------------------------------
# 1. Progress off a terminal


def test_training_progress_off_a_terminal_is_plain_timed_lines():
    console, buffer = _plain_console()
    now = [0.0]
    with StageProgress(console, training=True, interval=30, clock=lambda: now[0], timer=False) as progress:
        progress.begin("pretraining", 100)
        for moment, step, loss in ((5, 10, 3.5), (20, 20, 3.0), (40, 40, 2.5), (50, 70, 2.25), (75, 100, 2.0)):
            now[0] = moment
            progress.training(_step(step, 100, loss))
    assert _lines(buffer.getvalue()) == [
        "pretraining: started (100 steps)",
        # The first update; the rate (for the time left) is measured from it on.
        "pretraining: step 10/100, loss 3.5000, 250 tokens/s, elapsed 0:00:05, remaining unknown",
        # t=20 is within 30 s of the last line: nothing. t=40: 30 steps in 35 s, 60 to go.
        "pretraining: step 40/100, loss 2.5000, 250 tokens/s, elapsed 0:00:40, remaining ~0:01:10",
        # t=50 is again within 30 s; the end is always written.
        "pretraining: step 100/100, loss 2.0000, 250 tokens/s, elapsed 0:01:15, done",
    ]


def test_evaluation_progress_off_a_terminal_counts_samples():
    console, buffer = _plain_console()
    now = [0.0]
    with StageProgress(console, training=False, interval=0, clock=lambda: now[0], timer=False) as progress:
        progress.begin("tiny-base", unit="samples", line_name="evaluating tiny-base")
        for moment, finished in ((1, 0), (11, 40), (31, 120)):
            now[0] = moment
            progress.evaluation("requests", finished, 120)
    assert _lines(buffer.getvalue()) == [
        "evaluating tiny-base: 0/120 samples, elapsed 0:00:01, remaining unknown",
        "evaluating tiny-base: 40/120 samples, elapsed 0:00:11, remaining ~0:00:20",
        "evaluating tiny-base: 120/120 samples, elapsed 0:00:31, done",
    ]


def test_a_stage_without_updates_still_gets_a_line_every_interval():
    """A slow first step (or a long mixture build) must not leave the log silent."""
    import time

    console, buffer = _plain_console()
    with StageProgress(console, training=True, interval=0.1) as progress:
        progress.begin("tuning", 50)
        time.sleep(0.45)
    waiting = [line for line in _lines(buffer.getvalue()) if line.startswith("tuning: step ?/50")]
    assert len(waiting) >= 2, buffer.getvalue()
    assert "elapsed 0:00:00" in waiting[0] and "remaining unknown" in waiting[0]


def test_first_use_build_of_the_builtin_models_reports_progress_off_a_terminal(monkeypatch, tmp_path):
    """`harness run` with no --model builds the built-in pair: its stages and steps reach a log."""
    import harness.builtin.pretrained as pretrained

    def fake_pair(stage, on_progress):
        stages = (("pretraining tiny-base on 9 local documents", 20), ("tuning tiny-flan on 30 examples", 10))
        for name, steps in stages:
            stage(name, steps)
            for step in range(10, steps + 1, 10):
                on_progress(_step(step, steps, 4.0 - step / 10))
        return {"tiny-base": tmp_path / "base", "tiny-flan": tmp_path / "flan"}

    monkeypatch.setattr(pretrained, "builtin_pair", fake_pair)
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    console, buffer = _plain_console()
    assert commands._builtin_models(console) == [str(tmp_path / "base"), str(tmp_path / "flan")]
    lines = _lines(buffer.getvalue())
    assert lines[:3] == ["first use: pretraining tiny-base on 9 local documents (cached afterwards)",
                         "pretraining: started (20 steps)",
                         "pretraining: step 10/20, loss 3.0000, 250 tokens/s, elapsed 0:00:00, remaining unknown"]
    assert re.fullmatch(r"pretraining: step 20/20, loss 2\.0000, 250 tokens/s, elapsed 0:00:00, done", lines[3])
    assert lines[4:6] == ["first use: tuning tiny-flan on 30 examples (cached afterwards)",
                          "tuning: started (10 steps)"]
    assert lines[6].startswith("tuning: step 10/10, loss 3.0000") and lines[6].endswith("done")


def test_harness_tune_off_a_terminal_prints_step_loss_elapsed_and_remaining(tiny_models, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    code = main(["tune", "--base", str(tiny_models["tiny-llama"]), "--held-out", "comparison", "--steps", "3",
                 "--total", "24", "--batch-size", "4", "--save-every", "0", "--out", str(tmp_path / "ckpt")])
    assert code == 0, capsys.readouterr().err
    lines = _lines(capsys.readouterr().err)
    assert "training: started (3 steps)" in lines
    steps = [line for line in lines if line.startswith("training: step ")]
    assert [line.split(",")[0] for line in steps] == ["training: step 1/3", "training: step 2/3", "training: step 3/3"]
    pattern = r"training: step 2/3, loss \d+\.\d{4}, \d+ tokens/s, elapsed \d:\d\d:\d\d, remaining ~\d:\d\d:\d\d"
    assert re.fullmatch(pattern, steps[1]), steps[1]
    assert steps[-1].endswith(", done") and "elapsed " in steps[-1]


def test_harness_run_off_a_terminal_prints_evaluation_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    assert main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "parity", "--limit", "3",
                 "--out", str(tmp_path), "--run-id", "r"]) == 0
    lines = [line for line in _lines(capsys.readouterr().err) if line.startswith("evaluating dry: ")]
    # 3 rows x 6 templates
    assert re.fullmatch(r"evaluating dry: 0/18 samples, elapsed \d:\d\d:\d\d, remaining unknown", lines[0])
    assert re.fullmatch(r"evaluating dry: 18/18 samples, elapsed \d:\d\d:\d\d, done", lines[-1])


# ---------------------------------------------------------------------------------------------
# 2. A row out of range


@pytest.mark.parametrize("row", ["999999", "200", "-1"])
def test_tasks_show_row_out_of_range_is_one_line(row, one_error_line):
    task = Registry().get("parity")
    rows = len(load_split(task, task.data.eval_split))
    assert main(["tasks", "show", "parity", "--row", row]) == 2
    assert one_error_line() == (f"error: --row {row}: split 'test' of task 'parity' has {rows} rows "
                                f"(valid rows 0..{rows - 1})")


# ---------------------------------------------------------------------------------------------
# 3. One number, one value


@pytest.fixture(scope="module")
def overlapping_runs(tmp_path_factory) -> list:
    """Run a (shortest option) on parity and compare_numbers, 10 rows; run b (longest option) on
    parity and sentiment_lexicon, 5 rows: they share 5 rows of parity, and a task each of their own."""
    out = tmp_path_factory.mktemp("overlap")
    assert main(["run", "--backend", "scripted", "--model", "shortest", "--tasks", "parity,compare_numbers",
                 "--shots", "0,1", "--limit", "10", "--out", str(out), "--run-id", "a"]) == 0
    longest = ScriptedBackend("longest", score=lambda index, request: [float(len(c)) for c in request.continuations])
    run(RunConfig(tasks="parity,sentiment_lexicon", shots=(0, 1), limit=5), longest, Registry(), out, run_id="b")
    return load_runs([out / "a", out / "b"])


def test_scatter_plots_the_paired_tables_numbers(overlapping_runs):
    report = build_report(overlapping_runs, None)
    table = next(grid for grid in report.tables if grid.id == "table-compare-1-tasks")
    assert table.columns[4:6] == ("a", "b")
    expected = {(row[1], int(row[2]), row[4], row[5]) for row in table.rows}
    assert {(task, shots) for task, shots, _, _ in expected} == {("parity", 0), ("parity", 1)}
    # The bug's shape: a's score over all its 10 rows is not its score on the 5 shared ones.
    all_rows = {r["task"]: r["mean"] for r in task_scores(*overlapping_runs[0][1:]) if r["shots"] == 0}
    shared_a = next(row[4] for row in table.rows if row[1] == "parity" and row[2] == "0")
    assert pct(all_rows["parity"]) != shared_a
    scatter = report.data["scatter"]["b"]
    assert {(r["task"], r["shots"], pct(r["a"]), pct(r["b"])) for r in scatter} == expected
    # ... and the figure draws exactly those points.
    figure = scatter_figure(report.data["scatter"], report.data["labels"])
    drawn = {(pct(line.get_xdata()[0] / 100), pct(line.get_ydata()[0] / 100))
             for container in figure.axes[0].containers for line in container.lines[:1]}
    assert drawn == {(a, b) for _, _, a, b in expected}
    assert "samples the two runs share" in next(p.caption for p in report.plots if p.id == "plot-scatter")


def test_shots_plot_averages_the_tasks_every_run_covers_and_says_so(overlapping_runs):
    report = build_report(overlapping_runs, None)
    caption = next(p.caption for p in report.plots if p.id == "plot-shots")
    assert "every run covers (parity)" in caption
    assert "a: compare_numbers, parity; b: parity, sentiment_lexicon" in caption
    for (_, record, _), label in zip(overlapping_runs, ("a", "b"), strict=True):
        parity = {r["shots"]: r["mean"] for r in shots_curve(record) if r["task"] == "parity"}
        plotted = {r["shots"]: r["mean"] for r in report.data["shots_plot"][label] if r["task"] == "(all)"}
        assert plotted == parity


@pytest.fixture(scope="module")
def half_past(tmp_path_factory) -> list:
    """A run whose parity score is 41 of 80 = 0.5125 (the float a hair below), and a run of all wrong
    answers on the same samples, so every table has 0.5125 to print."""
    out = tmp_path_factory.mktemp("half")
    assert main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "parity", "--templates", "completion",
                 "--limit", "80", "--out", str(out), "--run-id", "half"]) == 0
    (directory, record, samples), = load_runs([out / "half"])
    right = {s.row_id for s in sorted(samples, key=lambda s: int(s.row_id))[:41]}
    half = [replace(s, metrics={name: float(s.row_id in right) for name in s.metrics}) for s in samples]
    scores = [replace(score, metrics={name: replace(m, mean=41 / 80) for name, m in score.metrics.items()})
              for score in record.scores]
    wrong = [replace(s, metrics={name: 0.0 for name in s.metrics}) for s in samples]
    return [(directory, replace(record, scores=scores), half),
            (directory + "-wrong", replace(record, run_id="wrong", scores=[
                replace(score, metrics={name: replace(m, mean=0.0) for name, m in score.metrics.items()})
                for score in record.scores]), wrong)]


def test_a_score_prints_the_same_in_every_table(half_past):
    (_, record, samples), (_, _, wrong) = half_past
    assert record.scores[0].metrics["acc"].mean == 41 / 80 and f"{100 * 41 / 80:.1f}" == "51.2"  # the float's own
    console, buffer = _plain_console()
    comparison = compare_runs((record, samples), (half_past[1][1], wrong), labels=("half", "wrong"))
    for table in (score_table(record), cluster_table([record]), comparison_table(comparison),
                  comparison_task_table(comparison),
                  seen_cluster_table(cluster_scores(record, samples), confidence=0.95)):
        console.print(table)
    terminal = buffer.getvalue()
    report = build_report(half_past, None)
    page = re.sub(r"<svg.*?</svg>", "", render_html(report), flags=re.S)  # coordinates are no scores
    markdown = render_markdown(report)
    cells = {grid.id: grid for grid in report.tables}
    assert ("arithmetic", "0", "half", "unlabelled", "acc", "51.3") == cells["table-clusters"].rows[0][:6]
    assert cells["table-compare-1"].rows[0][3] == "51.3" and cells["table-compare-1-tasks"].rows[0][4] == "51.3"
    for where, text in (("terminal", terminal), ("html", page), ("markdown", markdown)):
        assert "51.3" in text and "51.2" not in text, where
    assert "51.3 ± " in terminal and "-51.3 [" in terminal  # the score and the delta, away from zero alike
    assert "| 51.3 | 0.0 | -51.3 |" in markdown


# ---------------------------------------------------------------------------------------------
# 4. Names are text, not rich markup

BRACKETS = "[/x]mine[red]"


@pytest.fixture
def bracket_task(tmp_path) -> Path:
    make_task(tmp_path, TASK.replace("cluster: mine", f'cluster: "{BRACKETS}"'))
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(4)]
    (tmp_path / "tasks" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "tasks"


def test_task_list_and_show_print_bracketed_names(bracket_task, capsys):
    assert main(["tasks", "--task-dir", str(bracket_task)]) == 0
    assert BRACKETS in capsys.readouterr().out
    assert main(["tasks", "show", "mytask", "--task-dir", str(bracket_task), "--shots", "0"]) == 0
    assert "mytask / t1 [" in capsys.readouterr().out


def test_run_compare_and_report_print_bracketed_names(bracket_task, tmp_path, capsys):
    out = tmp_path / "out[b]"
    for run_id, model in (("a[b]1", "m[i]x"), ("b[i]2", "n[/red]y")):
        assert main(["run", "--backend", "scripted", "--model", model, "--task-dir", str(bracket_task),
                     "--tasks", "mytask", "--out", str(out), "--run-id", run_id]) == 0
        printed = capsys.readouterr().out
        assert f"run record: {out / run_id}" in printed and BRACKETS in printed
        assert f"{run_id}  ({model})" in printed  # the score table's title
    runs = [str(out / "a[b]1"), str(out / "b[i]2")]
    assert main(["compare", *runs]) == 0
    printed = capsys.readouterr().out
    assert printed.count(BRACKETS) == 2 and "A = a[b]1 (m[i]x)" in printed
    assert main(["report", *runs, "--out", str(tmp_path / "report[/b]")]) == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'report[/b]' / 'report.html'}" in printed and BRACKETS in printed


# ---------------------------------------------------------------------------------------------
# 5. Data folders that are not there


@pytest.mark.parametrize("command", [
    ["run", "--model", "/no/such/model", "--tasks", "parity"],
    ["tasks", "show", "parity"],
    ["tune", "--base", "/no/such/model", "--held-out", "comparison", "--steps", "1", "--out", "OUT"],
])
@pytest.mark.parametrize(("option", "expected"), [
    (["--data-dir", "MISSING"], "--data-dir MISSING: no such folder"),
    (["--data-dir", "FILE"], "--data-dir FILE: is not a folder"),
    (["--data", "no_such_task=FOLDER"], "--data no_such_task=FOLDER: unknown task 'no_such_task'"),
    (["--data", "parity=MISSING"], "--data parity=MISSING: no such folder"),
])
def test_bad_data_options_are_refused_before_any_model_loads(command, option, expected, tmp_path, one_error_line):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    names = {"MISSING": str(tmp_path / "missing"), "FILE": str(tmp_path / "file"), "FOLDER": str(tmp_path / "folder"),
             "OUT": str(tmp_path / "ckpt")}

    def fill(text: str) -> str:
        return re.sub("|".join(names), lambda m: names[m.group(0)], text)

    assert main([fill(part) for part in command + option]) == 2
    assert fill(expected) in one_error_line()
