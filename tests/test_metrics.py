"""Metric values checked against hand computations and the reference rules they follow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics import choice_metrics, exact_match, f1, mean_and_stderr, normalize_answer, rouge_l


def test_acc_and_acc_norm_follow_lm_eval():
    # Raw argmax is option 0; per-character normalisation (-4/2 = -2 vs -6/12 = -0.5) picks option 1.
    scores = choice_metrics([-4.0, -6.0], ["no", "yes, indeed"], answer_index=1)
    assert scores == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_metrics([-1.0, -2.0, -3.0], ["a", "b", "c"], 0) == {"acc": 1.0, "acc_norm": 1.0}


def test_squad_normalisation():
    assert normalize_answer("  The Cat,  sat! ") == "cat sat"
    assert exact_match(" an Apple.", ["apple"]) == 1.0
    assert exact_match("apples", ["apple", "pear"]) == 0.0
    assert exact_match("Pear", ["apple", "pear"]) == 1.0


def test_token_f1():
    # prediction tokens: cat sat mat ; reference: cat sat on mat -> common 3, P=1, R=3/4
    assert f1("the cat sat the mat", ["cat sat on mat"]) == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert f1("dog", ["cat", "dog house"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1("", [""]) == 1.0


def test_rouge_l_matches_lcs_by_hand():
    # LCS of "the cat sat on the mat" and "the cat is on the mat" is 5 tokens; P = R = 5/6.
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)
    # Porter stemming makes "running" match "run"; the maximum over references is taken.
    assert rouge_l("running", ["walk", "run"]) == pytest.approx(1.0)


def test_bootstrap_stderr_is_seeded_and_close_to_the_analytic_value():
    values = [1.0] * 30 + [0.0] * 70
    mean, stderr = mean_and_stderr(values, seed=0)
    assert mean == pytest.approx(0.3)
    assert stderr == pytest.approx(math.sqrt(0.3 * 0.7 / 100), rel=0.15)
    assert mean_and_stderr(values, seed=0) == (mean, stderr)
    assert mean_and_stderr([0.5], seed=0) == (0.5, 0.0)
    assert all(np.isnan(mean_and_stderr([], seed=0)))
