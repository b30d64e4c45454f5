"""The budget estimator's posterior draws (`estimator="bayes"`, `harness.analysis.budget_bayes`)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.budget import estimate_budget, score_summary
from harness.errors import HarnessError
from tests.test_budget import budgeted, synthetic, with_constant_templates


def test_posterior_draws_recover_a_known_model_and_their_intervals_cover_it():
    template_errors, quantile_errors, template_cover, summary_cover = [], [], [], []
    for seed in range(10):
        full = synthetic(seed, templates=12, rows=120)
        truth = full.sums.mean(axis=1)
        estimate = estimate_budget(budgeted(full, 0.25, seed), seed=seed, resamples=10, estimator="bayes")
        scores = np.array([t.score.value for t in estimate.templates])
        template_errors.append(np.mean(np.abs(scores - truth)))
        template_cover.append(np.mean([t.score.low <= v <= t.score.high
                                       for t, v in zip(estimate.templates, truth, strict=True)]))
        stats = [estimate.distribution.mean, *(q for _, q in estimate.distribution.quantiles)]
        quantile_errors.append(np.abs(np.array([s.value for s in stats]) - score_summary(truth)[:6]))
        summary_cover.append(np.mean([s.low <= v <= s.high for s, v in zip(stats, score_summary(truth)[:6],
                                                                             strict=True)]))
    # Measured: template error 5.5 points, mean and quantile errors 2.2 to 4.6; coverage 88%
    # (templates) and 83% (mean and quantiles). The sampler has no covariates, and these templates'
    # effects are mostly their tags' (the plug-in, with them, covers 92%).
    assert np.mean(template_errors) < 0.06
    assert np.all(np.mean(quantile_errors, axis=0) < 0.05)
    assert np.mean(template_cover) >= 0.8
    assert np.mean(summary_cover) >= 0.8


def test_a_template_that_always_answers_one_option_is_drawn_at_half():
    always_first = {t: np.array([1.0, 0.0]) for t in (3, 8, 13)}
    errors = []
    for seed in range(3):
        part = budgeted(with_constant_templates(seed, always_first), 0.1, seed)
        estimate = estimate_budget(part, seed=seed, resamples=10, estimator="bayes")
        errors += [abs(estimate.templates[t].score.value - 0.5) for t in always_first]
        assert all(estimate.templates[t].score.low <= 0.5 <= estimate.templates[t].score.high for t in always_first)
    assert np.mean(errors) < 0.001  # measured 0.00004: its pattern, not the logistic model, fills its rows


def test_a_full_run_is_its_own_estimate_and_the_draws_are_seeded():
    full = synthetic(0, templates=6, rows=40)
    exact = estimate_budget(full, seed=0, resamples=10, estimator="bayes")
    assert [t.score.value for t in exact.templates] == list(full.sums.sum(axis=1) / full.counts.sum(axis=1))
    assert all(t.score.low == t.score.value == t.score.high for t in exact.templates)
    part = budgeted(full, 0.3, 1)
    first, again = (estimate_budget(part, seed=4, resamples=10, estimator="bayes") for _ in range(2))
    assert first == again
    other = estimate_budget(part, seed=5, resamples=10, estimator="bayes")
    assert other.distribution != first.distribution


def test_an_unknown_estimator_is_refused_naming_the_choices():
    with pytest.raises(HarnessError, match="unknown budget estimator 'mcmc'; use one of plug-in, bayes, choices"):
        estimate_budget(synthetic(0, templates=4, rows=20), estimator="mcmc")
