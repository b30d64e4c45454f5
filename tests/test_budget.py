"""The budgeted estimate of a score's spread over templates: the cell design (nested, balanced,
deterministic) and the estimator (recovery of a known logistic model, interval coverage, the exact
full-budget mean, tag effects), on synthetic matrices and the stored run records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.budget import estimate_budget, score_summary
from harness.analysis.budget_draws import RowIndependent
from harness.analysis.budget_matrix import CellMatrix, cell_matrix, run_matrices
from harness.analysis.irt import Cells
from harness.errors import HarnessError
from harness.eval.budget_design import budget_size, design_cells, design_order
from harness.eval.record import Sample
from harness.eval.store import load_run

RUNS = Path(__file__).parent / "data" / "runs"
TEMPLATES = [f"t{i:02d}" for i in range(12)]
ROWS = [f"row-{i}" for i in range(30)]


# The design.

def test_full_budget_is_every_cell_once():
    cells = design_cells(TEMPLATES, ROWS, 1.0, seed=3)
    assert len(cells) == len(set(cells)) == 12 * 30
    assert set(cells) == {(t, r) for t in TEMPLATES for r in ROWS}
    assert design_cells(TEMPLATES, ROWS, 360, seed=3) == cells


@pytest.mark.parametrize("templates,rows", [(12, 30), (7, 11), (48, 433), (5, 3)])
def test_every_prefix_is_balanced_over_templates_and_rows(templates, rows):
    names, row_ids = [f"t{i}" for i in range(templates)], [f"r{i}" for i in range(rows)]
    order = design_order(names, row_ids, seed=0)
    assert len(set(order)) == templates * rows
    per_template, per_row = Counter(), Counter()
    for size, (template, row) in enumerate(order, start=1):
        per_template[template] += 1
        per_row[row] += 1
        if size % 37 and size != len(order):
            continue  # check every 37th prefix and the last: enough to catch an unbalanced stretch
        counts_t = [per_template[t] for t in names]
        counts_r = [per_row[r] for r in row_ids]
        assert {min(counts_t), max(counts_t)} <= {size // templates, -(-size // templates)}
        assert {min(counts_r), max(counts_r)} <= {size // rows, -(-size // rows)}
        if size >= rows:
            assert min(counts_r) >= 1


def test_a_larger_budget_contains_a_smaller_one():
    budgets = [0.05, 0.1, 0.25, 0.5, 1.0]
    designs = [design_cells(TEMPLATES, ROWS, b, seed=7) for b in budgets]
    for small, large in zip(designs[:-1], designs[1:], strict=True):
        assert set(small) < set(large)
        assert large[:len(small)] == small
    assert [len(d) for d in designs] == [18, 36, 90, 180, 360]
    assert design_cells(TEMPLATES, ROWS, 0.1, seed=8) != designs[1]  # the seed matters


def test_the_design_does_not_depend_on_input_order_or_the_process():
    cells = design_cells(TEMPLATES, ROWS, 0.2, seed=5)
    assert design_cells(list(reversed(TEMPLATES)), sorted(ROWS, key=hash), 0.2, seed=5) == cells
    code = ("import json, sys; from harness.eval.budget_design import design_cells; "
            f"print(json.dumps(design_cells({TEMPLATES!r}, {ROWS!r}, 0.2, 5)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                            cwd=Path(__file__).parent.parent).stdout
    assert [tuple(c) for c in json.loads(output)] == cells


@pytest.mark.parametrize("budget,message", [
    (0.0, "must be in (0, 1]"), (1.5, "must be in (0, 1]"), (0, "outside 1..360"), (361, "outside 1..360"),
    (True, "a fraction"), ("0.1", "a fraction"),
])
def test_bad_budgets_are_refused_naming_the_flag(budget, message):
    with pytest.raises(HarnessError, match=r"--budget") as caught:
        design_cells(TEMPLATES, ROWS, budget, seed=0)
    assert message in str(caught.value)


def test_fractions_round_up_without_float_noise():
    assert budget_size(0.1, 4330) == 433
    assert budget_size(0.1, 4331) == 434
    assert budget_size(1e-9, 100) == 1


# The estimator, on matrices drawn from a known logistic model.

def synthetic(seed: int, templates: int = 16, rows: int = 150) -> CellMatrix:
    """Every cell drawn from sigmoid(0.3 + theta_t - beta_r), with theta from the template's tags
    (listing the options helps by 0.8 logits, one separator hurts by 0.5) plus noise."""
    rng = np.random.default_rng(seed)
    options = np.arange(templates) % 2 == 0
    separator = rng.integers(0, 2, templates)
    theta = 0.8 * options - 0.5 * separator + rng.normal(0, 0.5, templates)
    beta = rng.normal(0, 1.5, rows)
    values = (rng.random((templates, rows)) < 1 / (1 + np.exp(-(0.3 + theta[:, None] - beta[None, :])))) * 1.0
    tags = tuple({"options": bool(o), "style": "question", "extra": {"format": {"separator": [":", " -"][s]}}}
                 for o, s in zip(options, separator, strict=True))
    return CellMatrix("synthetic", 0, "acc", tuple(f"t{i:02d}" for i in range(templates)),
                      tuple(f"r{i:03d}" for i in range(rows)), tags, values, np.ones(values.shape),
                      np.ones(values.shape, dtype=bool))


def budgeted(matrix: CellMatrix, budget: float, seed: int) -> CellMatrix:
    return matrix.subset(design_cells(matrix.templates, matrix.rows, budget, seed))


def test_estimates_recover_a_known_model_and_their_intervals_cover_it():
    template_errors, naive_errors, quantile_errors, template_cover, summary_cover = [], [], [], [], []
    for seed in range(20):
        full = synthetic(seed, templates=12, rows=120)
        truth = full.sums.mean(axis=1)
        estimate = estimate_budget(budgeted(full, 0.25, seed), seed=seed, resamples=40)
        scores = np.array([t.score.value for t in estimate.templates])
        template_errors.append(np.mean(np.abs(scores - truth)))
        naive_errors.append(np.mean(np.abs(np.array([t.naive for t in estimate.templates]) - truth)))
        template_cover.append(np.mean([t.score.low <= v <= t.score.high
                                       for t, v in zip(estimate.templates, truth, strict=True)]))
        distribution = estimate.distribution
        stats = [distribution.mean, *(q for _, q in distribution.quantiles)]
        quantile_errors.append(np.abs(np.array([s.value for s in stats]) - score_summary(truth)[:6])[1:6])
        summary_cover.append(np.mean([s.low <= v <= s.high
                                      for s, v in zip(stats, score_summary(truth)[:6], strict=True)]))
    assert np.mean(template_errors) < 0.06  # 30 cells a template: about 7 points of binomial noise each
    assert np.mean(template_errors) < np.mean(naive_errors)  # the rows' difficulty is worth knowing
    # Measured (the reported quantiles): 2.4 to 4.5 points; coverage 92% (templates) and 92% (mean
    # and quantiles), under the nominal 95%: empirical Bayes sets the spreads under the true ones
    # (template 0.2-0.6 logits for 0.5, rows 1.1 for 1.5), so the extreme templates are pulled in
    # further than the posterior would, and the intervals are of the full run's value on its own
    # rows, with no noise of drawing other rows to widen them.
    assert np.all(np.mean(quantile_errors, axis=0) < 0.05)
    assert np.mean(template_cover) >= 0.85
    assert np.mean(summary_cover) >= 0.85


def test_a_tag_effect_is_recovered_with_its_sign_and_an_interval():
    full = synthetic(1, templates=24, rows=200)
    estimate = estimate_budget(budgeted(full, 0.5, 1), seed=1, resamples=60)
    effects = {e.tag: e for e in estimate.tag_effects}
    assert [(e.tag, e.level) for e in estimate.tag_effects if e.tag == "options"] == [("options", "true")]
    options, separator = effects["options"], effects["format.separator"]
    assert (options.reference, options.templates) == ("false", 12)
    # Listing the options adds 0.8 logits: 10 to 20 points over these rows.
    assert 0.05 < options.effect.low < options.effect.value < options.effect.high
    assert 0.08 < options.effect.value < 0.25
    # The separator " -" costs 0.5 logits; its effect reads from the more common separator.
    assert {separator.level, separator.reference} == {":", " -"}
    assert separator.effect.value * (1 if separator.level == ":" else -1) > 0.03


def test_without_covariates_there_are_no_tag_effects_and_the_estimate_still_works():
    full = synthetic(2)
    estimate = estimate_budget(budgeted(full, 0.25, 2), covariates=False, seed=2, resamples=20)
    assert estimate.tag_effects == ()
    truth = full.sums.mean(axis=1)
    scores = np.array([t.score.value for t in estimate.templates])
    assert np.mean(np.abs(scores - truth)) < 0.07


def test_computed_cells_are_kept_and_the_naive_score_is_their_mean():
    full = synthetic(3, templates=4, rows=20)
    part = budgeted(full, 0.5, 0)
    estimate = estimate_budget(part, seed=0, resamples=10)
    for index, template in enumerate(estimate.templates):
        computed = part.computed[index]
        assert template.computed == computed.sum() == 10
        assert template.estimated and template.rows == 20
        assert template.naive == pytest.approx(part.sums[index, computed].mean(), abs=1e-12)
    assert (estimate.cells, estimate.computed) == (80, 40)


def test_a_budget_of_every_cell_is_the_full_runs_mean_exactly():
    record, samples = load_run(RUNS / "tuned")
    means = {(s.task, s.shots, s.template): s.metrics[s.primary].mean for s in record.ungrouped()}
    for (task, shots), matrix in run_matrices(record, samples).items():
        estimate = estimate_budget(matrix, seed=0, resamples=30)
        for template in estimate.templates:
            assert not template.estimated
            assert template.score.value == pytest.approx(means[(task, shots, template.template)], abs=1e-12)
            assert template.naive == template.score.value
            assert template.score.low <= template.score.value <= template.score.high
        scores = [t.score.value for t in estimate.templates]
        assert estimate.distribution.mean.value == pytest.approx(np.mean(scores), abs=1e-12)
        assert estimate.distribution.best.value == max(scores)


def test_a_stored_run_budgeted_to_half_its_cells_is_estimated():
    record, samples = load_run(RUNS / "base")
    matrices = run_matrices(record, samples)
    assert {key: (len(m.templates), len(m.rows)) for key, m in matrices.items()} == {
        (task, shots): (2, 5) for task in ("t1", "t2", "t3") for shots in (0, 2)}
    matrix = matrices[("t1", 0)]
    estimate = estimate_budget(budgeted(matrix, 0.5, 0), seed=0, resamples=30)
    assert [t.computed for t in estimate.templates] == [3, 2] or [t.computed for t in estimate.templates] == [2, 3]
    assert all(0 <= t.score.low <= t.score.value <= t.score.high <= 1 for t in estimate.templates)
    assert estimate.metric == "acc"


def test_a_subset_of_uncomputed_cells_and_an_empty_budget_are_refused():
    part = budgeted(synthetic(4, templates=4, rows=10), 0.5, 0)
    missing = next((t, r) for i, t in enumerate(part.templates) for j, r in enumerate(part.rows)
                   if not part.computed[i, j])
    with pytest.raises(HarnessError, match="was not computed in this run"):
        part.subset([missing])
    empty = part.subset([])
    with pytest.raises(HarnessError, match="no computed cell"):
        estimate_budget(empty)


# The template x class term and row-independent templates.

def with_constant_templates(seed: int, constant: dict[int, np.ndarray] | None = None) -> CellMatrix:
    """`synthetic` on rows of two alternating classes (gold option 0 or 1), with the templates of
    `constant` replaced by a row-independent answer: the given value on each class's rows."""
    full = synthetic(seed, templates=16, rows=150)
    classes = np.arange(len(full.rows)) % 2
    sums = full.sums.copy()
    for template, by_class in (constant or {}).items():
        sums[template] = by_class[classes]
    return CellMatrix(full.task, 0, "acc", full.templates, full.rows, full.tags, sums, full.counts, full.computed,
                      classes)


def test_a_template_that_always_answers_one_option_is_estimated_at_half():
    always_first = {t: np.array([1.0, 0.0]) for t in (3, 8, 13)}
    errors, without_classes = [], []
    for seed in range(5):
        full = with_constant_templates(seed, always_first)
        part = budgeted(full, 0.1, seed)
        estimate = estimate_budget(part, seed=seed, resamples=20)
        errors += [abs(estimate.templates[t].score.value - 0.5) for t in always_first]
        blind = estimate_budget(replace(part, row_classes=None), seed=seed, resamples=20)
        without_classes += [abs(blind.templates[t].score.value - 0.5) for t in always_first]
        # Its interval holds the 50% it scores.
        assert all(estimate.templates[t].score.low <= 0.5 <= estimate.templates[t].score.high for t in always_first)
    # Measured: 0.01 points on average with the classes; 7.2 points without them (the additive model
    # reads its 15 cells, about half right, through the rows' difficulties).
    assert np.mean(errors) < 0.01
    assert np.mean(without_classes) > 2 * np.mean(errors)


def test_a_template_right_on_every_computed_cell_can_be_at_100_percent():
    perfect = {t: np.array([1.0, 1.0]) for t in (0, 5, 10)}
    for seed in range(3):
        estimate = estimate_budget(budgeted(with_constant_templates(seed, perfect), 0.1, seed), seed=seed,
                                   resamples=40)
        for t in perfect:
            score = estimate.templates[t].score
            assert score.value > 0.85  # measured 0.96-0.996: 15 right cells do not rule out a template at 80%
            assert score.high == 1.0  # a row bootstrap of expected scores never reaches it


def test_rows_classes_come_from_the_samples_and_a_subset_keeps_those_it_computes():
    full = with_constant_templates(0)
    part = budgeted(full, 0.05, 0)  # 120 cells: some of the 150 rows have none
    seen = part.computed.any(axis=0)
    assert 0 < seen.sum() < len(full.rows)
    assert np.array_equal(part.row_classes[seen], full.row_classes[seen])
    assert np.all(part.row_classes[~seen] == -1)
    assert part.cells().classes == 2
    record, samples = load_run(RUNS / "base")
    matrix = run_matrices(record, samples)[("t1", 0)]
    gold = {s.row_id: s.answer_index for s in samples if (s.task, s.shots) == ("t1", 0)}
    assert matrix.row_classes.tolist() == [gold[row] for row in matrix.rows]


def make_sample(template: str, row: str, value: float, answer_index: int | None) -> Sample:
    return Sample("gen", "c", template, "h" * 12, 0, row, [], "prompt", {"em": value}, answer_index=answer_index)


def test_a_generation_task_has_no_class_term_and_gold_must_agree_across_templates():
    samples = [make_sample(t, r, float((i + j) % 2), None) for i, t in enumerate(("a", "b")) for j, r in
               enumerate(("r1", "r2", "r3"))]
    matrix = cell_matrix("gen", 0, "em", samples, ("a", "b"), ("r1", "r2", "r3"), {})
    assert matrix.row_classes.tolist() == [-1, -1, -1]
    cells = matrix.cells()
    assert cells.classes == 0 and np.all(cells.row_class == -1)
    estimate = estimate_budget(matrix.subset([("a", "r1"), ("a", "r2"), ("b", "r3")]), resamples=10)
    assert all(0 <= t.score.low <= t.score.value <= t.score.high <= 1 for t in estimate.templates)
    with pytest.raises(HarnessError, match="has gold option 1, another template of row 'r1' has 0"):
        cell_matrix("gen", 0, "em", [make_sample("a", "r1", 1.0, 0), make_sample("b", "r1", 1.0, 1)],
                    ("a", "b"), ("r1",), {})


def test_the_mixtures_likelihood_is_the_logistic_marginal_where_no_template_can_be_row_independent():
    # Cells of 0.5 (a non-binary score) agree with no pattern, so each template is a logistic one
    # and the prior share of row-independent ones is EM's smoothing alone, 1 / (templates + 2).
    cells = Cells(np.array([0, 0, 1, 2]), np.array([0, 1, 0, 1]), np.full(4, 0.5), np.ones(4), 3, 2,
                  np.array([0, 1]), 2)
    log_marginal = np.array([-1.5, -0.7, -2.0])
    mixture = RowIndependent(cells, log_marginal, binary=False)
    assert np.all(mixture.probability == 0)
    assert mixture.log_likelihood == pytest.approx(log_marginal.sum() + 3 * np.log(1 - 1 / 5), abs=1e-12)
    # Binary cells right on every row agree with "always right": the mixture then explains them
    # better than the logistic model alone, whatever its marginal.
    right = RowIndependent(replace(cells, value=np.ones(4)), log_marginal, binary=True)
    assert right.log_likelihood > log_marginal.sum()
