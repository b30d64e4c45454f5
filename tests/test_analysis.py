"""Template sensitivity against a hand computation on a stored record."""

from __future__ import annotations

import pytest

from harness.analysis import template_sensitivity


def score(task, template, shots, acc, group=None):
    entry = {"task": task, "cluster": "c", "template": template, "shots": shots,
             "metrics": {"acc": {"mean": acc, "stderr": 0.0}, "acc_norm": {"mean": 1 - acc, "stderr": 0.0}}}
    if group:
        entry["group"] = group
    return entry


RECORD = {"scores": [
    score("t", "a", 0, 0.2), score("t", "b", 0, 0.4), score("t", "c", 0, 0.6), score("t", "d", 0, 1.0),
    score("t", "a", 5, 0.5), score("t", "b", 5, 0.7),
    score("t", "a", 0, 0.9, group={"field": "category", "value": "x"}),  # per-group entries are not templates
]}


def test_median_quartiles_range_and_extremes_per_task_and_shots():
    zero, five = template_sensitivity(RECORD)
    # Ranked by the first metric (acc). Quartiles of [0.2, 0.4, 0.6, 1.0] by linear interpolation:
    # q1 = 0.2 + 0.75 * 0.2 = 0.35, median = 0.5, q3 = 0.6 + 0.25 * 0.4 = 0.7.
    assert (zero["task"], zero["shots"], zero["metric"], zero["templates"]) == ("t", 0, "acc", 4)
    assert zero["median"] == pytest.approx(0.5)
    assert (zero["q1"], zero["q3"]) == (pytest.approx(0.35), pytest.approx(0.7))
    assert (zero["min"], zero["max"]) == (pytest.approx(0.2), pytest.approx(1.0))
    assert (zero["best_template"], zero["worst_template"]) == ("d", "a")
    assert five["templates"] == 2 and five["median"] == pytest.approx(0.6)
    assert (five["best_template"], five["worst_template"]) == ("b", "a")


def test_all_templates_tied_name_no_best_or_worst():
    (row,) = template_sensitivity({"scores": [score("t", "a", 0, 0.0), score("t", "b", 0, 0.0)]})
    assert row["best_template"] is None and row["worst_template"] is None and row["max"] == 0.0
