"""`--budget-design adaptive`: a balanced first half, then the cells the allocation names from it
(`harness.analysis.budget_allocation`, `harness.adaptive_run`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.adaptive_run import run_budgeted
from harness.analysis.budget_allocation import adaptive_cells, relevance
from harness.cli import main
from harness.errors import HarnessError
from harness.eval.budget_design import budget_size, design_cells, first_stage_size
from harness.eval.budget_plan import Budget
from harness.eval.record import RunRecord
from harness.eval.run import run
from harness.eval.store import load_run
from harness.tasks.registry import Registry
from tests.test_budget import synthetic
from tests.test_budget_choices import leaning
from tests.test_budget_run import (
    CONFIG,
    ROWS,
    TEMPLATES,
    Counting,
    assert_same_cells,
    lines,
    without_timings,
)


def test_relevance_is_closeness_in_rank_to_the_nearest_quantile():
    # 48 templates known exactly: the quantiles sit at ranks 2.35, 11.75, 23.5, 35.25 and 44.65.
    draws = np.tile(np.arange(48.0), (3, 1))
    near = relevance(draws)
    assert near[2] == pytest.approx(np.exp(-0.5 * (0.35 / 2) ** 2))
    assert near[23] == near[24] == pytest.approx(np.exp(-0.5 * (0.5 / 2) ** 2))
    assert near[17] == pytest.approx(np.exp(-0.5 * (5.25 / 2) ** 2))  # 5.25 ranks above the 25% quantile
    assert near.argmin() in (17, 18, 29, 30, 40)
    # A template whose draws move between ranks is near a quantile in some of them.
    draws[1, [17, 23]] = draws[1, [23, 17]]
    assert relevance(draws)[17] == pytest.approx((2 * near[17] + near[23]) / 3)


def test_the_allocation_names_new_cells_deterministically_and_keeps_the_rows_balanced():
    full = leaning(0, rows=40)
    first = design_cells(full.templates, full.rows, 0.1, 3)
    stage = full.subset(first)
    extra = adaptive_cells(stage, 60, seed=3)
    assert extra == adaptive_cells(stage, 60, seed=3)
    assert extra != adaptive_cells(stage, 60, seed=4)
    assert len(extra) == len(set(extra)) == 60 and not set(extra) & set(first)
    keep = full.subset(first + extra).computed
    assert np.ptp(keep.sum(axis=0)) <= np.ptp(stage.computed.sum(axis=0)) + 1, "each cell to a least-used row"
    # The cells go where the posterior says the quantiles are undecided, not evenly.
    assert np.ptp(keep.sum(axis=1) - stage.computed.sum(axis=1)) >= 3


def test_the_allocation_reads_the_logistic_sampler_without_choices_and_stops_at_a_full_matrix():
    full = synthetic(1, templates=6, rows=10)
    stage = full.subset(design_cells(full.templates, full.rows, 20, 0))
    extra = adaptive_cells(stage, 100, seed=0)
    assert len(extra) == 40 and not stage.choices
    assert full.subset(design_cells(full.templates, full.rows, 20, 0) + extra).computed.all()


BUDGET = Budget.parse("0.5", "adaptive")
SIZE, FIRST = budget_size(0.5, TEMPLATES * ROWS), 18  # half of 36 cells, and at least one cell a row


@pytest.fixture(scope="module")
def full_run(plain_backend, tmp_path_factory, one_torch_thread):
    """The full run the adaptive ones are compared with (the same as test_budget_run's)."""
    return run(CONFIG, plain_backend, Registry(), tmp_path_factory.mktemp("full"), run_id="r")[0]


@pytest.fixture(scope="module")
def adaptive(plain_backend, tmp_path_factory, one_torch_thread):
    """An uninterrupted adaptive run: (its folder, its record, the requests it answered)."""
    counting = Counting(plain_backend)
    directory, record = run_budgeted(CONFIG, counting, Registry(), tmp_path_factory.mktemp("adaptive"), run_id="r",
                                     budget=BUDGET, reuse_complete=True)
    return directory, record, counting.answered


def test_an_adaptive_budget_computes_a_balanced_half_then_the_allocation(adaptive):
    directory, record, answered = adaptive
    assert first_stage_size(SIZE, TEMPLATES, ROWS) == FIRST
    assert record.budget.design == "adaptive"
    assert [(c.design, c.computed) for c in record.budget.cells] == [(SIZE, SIZE)] * 4
    assert answered == record.counts["samples"] == 4 * SIZE
    samples = load_run(directory)[1]
    for task in ("parity", "add_numbers"):
        for shots in (0, 2):
            computed = {(s.template, s.row_id) for s in samples if (s.task, s.shots) == (task, shots)}
            templates, rows = sorted({t for t, _ in computed}), sorted({r for _, r in computed})
            assert (len(templates), len(rows)) == (TEMPLATES, ROWS)
            assert set(design_cells(templates, rows, FIRST, 7)) < computed
            assert computed != set(design_cells(templates, rows, SIZE, 7)), "the second half is not the balanced one"
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert json.loads((directory / "run.json").read_text())["budget"]["design"] == "adaptive"


def test_an_adaptive_run_resumes_from_its_first_half_reruns_to_nothing_and_extends_to_the_full_run(
        adaptive, plain_backend, full_run, tmp_path, one_torch_thread):
    _, half = run(CONFIG, plain_backend, Registry(), tmp_path, run_id="r", budget=BUDGET)
    assert [c.computed for c in half.budget.cells] == [FIRST] * 4, "stopped after the first stage: a balanced half"
    counting = Counting(plain_backend)
    directory, record = run_budgeted(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=BUDGET,
                                     reuse_complete=True)
    assert counting.answered == 4 * (SIZE - FIRST)
    assert keys(directory) == keys(adaptive[0]), "the same cells as the uninterrupted run"
    _, again = run_budgeted(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=BUDGET, reuse_complete=True)
    assert counting.answered == 4 * (SIZE - FIRST) and again == record, "the same command again computes nothing"
    full = {json.loads(line)["key"]: line for line in lines(full_run)}
    assert_same_cells(lines(directory), full)
    directory, complete = run_budgeted(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=None,
                                       reuse_complete=True)
    assert counting.answered == 4 * (TEMPLATES * ROWS - FIRST) and complete.budget is None
    assert_same_cells(lines(directory), full)
    assert without_timings(directory)["scores"] == without_timings(full_run)["scores"]


def keys(directory) -> set[str]:
    return {json.loads(line)["key"] for line in lines(directory)}


def test_an_adaptive_budget_in_a_folder_with_more_cells_adds_only_its_own_second_half(
        adaptive, plain_backend, full_run, tmp_path, one_torch_thread):
    run(CONFIG, plain_backend, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.75"))
    before = keys(tmp_path / "r")
    counting = Counting(plain_backend)
    directory, record = run_budgeted(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=BUDGET,
                                     reuse_complete=True)
    # Nothing is dropped, and the second half is the uninterrupted run's: sized by this budget, not by
    # the record of the larger one the folder held.
    uninterrupted = keys(adaptive[0])
    assert keys(directory) == before | uninterrupted
    assert counting.answered == len(uninterrupted - before) > 0
    assert record.counts["samples"] == len(before | uninterrupted)
    # A folder holding the full run: nothing to compute, and the record is the full run's.
    counting = Counting(plain_backend)
    _, complete = run_budgeted(CONFIG, counting, Registry(), full_run.parent, run_id="r", budget=BUDGET,
                               reuse_complete=True)
    assert counting.answered == 0 and complete.budget is None


def test_the_budget_design_is_checked(capsys):
    with pytest.raises(HarnessError, match="--budget-design 'random'"):
        Budget(0.1, "0.1", "random")
    command = ["run", "--tasks", "parity", "--budget-design", "adaptive", "--backend", "scripted", "--model", "x"]
    assert main(command) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "give --budget too" in error
    raw = {"requested": "0.1", "seed": 0, "cells": [], "design": "sideways"}
    from harness.eval.json_fields import Fields
    from harness.eval.record import RunBudget

    with pytest.raises(HarnessError, match="balanced or adaptive"):
        RunBudget.read(Fields(raw, "budget"))


def test_the_command_line_runs_an_adaptive_budget_and_says_so(tmp_path, capsys):
    command = ["run", "--backend", "scripted", "--model", "x", "--tasks", "parity", "--limit", "12", "--budget", "0.5",
               "--budget-design", "adaptive", "--out", str(tmp_path / "runs")]
    assert main(command) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"budget 0.5 (adaptive design): {SIZE} of {TEMPLATES * ROWS} cells computed" in out
    (directory,) = (tmp_path / "runs").iterdir()
    assert main(["report", str(directory), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"{SIZE} of {TEMPLATES * ROWS} (--budget 0.5, adaptive design)" in markdown
