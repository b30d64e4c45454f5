"""Template sensitivity, scores with intervals, zero- vs few-shot and the seen / held-out gap,
against hand computations on stored records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.scores import cluster_scores, generalization_gap, shots_curve, task_scores, template_sensitivity
from harness.eval.store import load_run
from tests.test_record import make_record, make_sample, make_score


def score(task, template, shots, acc, group=None):
    return make_score(task, template, shots, {"acc": acc, "acc_norm": 1 - acc}, group=group)


RECORD = make_record([
    score("t", "a", 0, 0.2), score("t", "b", 0, 0.4), score("t", "c", 0, 0.6), score("t", "d", 0, 1.0),
    score("t", "a", 5, 0.5), score("t", "b", 5, 0.7),
    score("t", "a", 0, 0.9, group={"field": "category", "value": "x"}),  # per-group entries are not templates
])


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
    (row,) = template_sensitivity(make_record([score("t", "a", 0, 0.0), score("t", "b", 0, 0.0)]))
    assert row["best_template"] is None and row["worst_template"] is None and row["max"] == 0.0


# Scores with intervals on the stored runs of tests/data/runs (see tests/test_compare.py for their
# layout). "tuned" is labelled by `--seen t1`: t1 seen, t2 held out task (t1 shares its cluster c1),
# t3 held out cluster; its t3 has six rows (r0-r5), the other tasks five.

RUNS = Path(__file__).parent / "data" / "runs"


@pytest.fixture(scope="module")
def tuned():
    return load_run(RUNS / "tuned")


def one(rows, **key):
    (row,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return row


def test_stored_runs_scores_agree_with_their_samples():
    for name in ("base", "tuned", "base-copy", "edited"):
        record, samples = load_run(RUNS / name)
        for score in record.scores:
            values = [s.metrics["acc"] for s in samples if (s.task, s.template, s.template_hash,
                      s.shots) == (score.task, score.template, score.template_hash, score.shots)]
            assert score.n == len(values) and score.metrics["acc"].mean == pytest.approx(np.mean(values))


def test_cluster_scores_by_label_against_a_hand_computation(tuned):
    rows = cluster_scores(*tuned, seed=0, resamples=300)
    assert [(r["cluster"], r["shots"], r["seen_status"]) for r in rows] == [
        ("c1", 0, "seen"), ("c1", 0, "held_out_task"), ("c1", 2, "seen"), ("c1", 2, "held_out_task"),
        ("c2", 0, "held_out_cluster"), ("c2", 2, "held_out_cluster"),
    ]
    # Template means over the task's rows (acc), then the mean over templates:
    #   t1 (seen) 0-shot (4/5 + 3/5) / 2 = 0.7, 2-shot (5/5 + 4/5) / 2 = 0.9
    #   t2 (held out task) 0-shot (0/5 + 1/5) / 2 = 0.1, 2-shot (1/5 + 2/5) / 2 = 0.3
    #   t3 (held out cluster, six rows) 0-shot (2/6 + 3/6) / 2 = 5/12, 2-shot (4/6 + 4/6) / 2 = 2/3
    expected = {("c1", 0, "seen"): 0.7, ("c1", 0, "held_out_task"): 0.1, ("c1", 2, "seen"): 0.9,
                ("c1", 2, "held_out_task"): 0.3, ("c2", 0, "held_out_cluster"): 5 / 12,
                ("c2", 2, "held_out_cluster"): 2 / 3}
    for row in rows:
        assert row["mean"] == pytest.approx(expected[(row["cluster"], row["shots"], row["seen_status"])])
        assert row["low"] <= row["mean"] <= row["high"] and row["metric"] == "acc" and row["tasks"] == 1
    assert one(rows, cluster="c2", shots=0)["samples"] == 12 and one(rows, cluster="c1", shots=0,
                                                                      seen_status="seen")["samples"] == 10
    # t1 2-shot: rows r0-r3 right in both templates, r4 in one -> no draw can fall below 0.5 + 0.5 * 0.8.
    assert one(rows, cluster="c1", shots=2, seen_status="seen")["low"] >= 0.7
    assert cluster_scores(*tuned, seed=0, resamples=300) == rows
    assert json.loads(json.dumps(rows)) == rows


def test_a_cluster_averages_tasks_and_draws_each_tasks_rows():
    record, samples = load_run(RUNS / "base")
    rows = cluster_scores(record, samples, seed=5, resamples=400)
    tasks = task_scores(record, samples, seed=5, resamples=400)
    c1 = one(rows, cluster="c1", shots=0)
    # No labels on base: one row per cluster and shot count; c1 = (t1 0.3 + t2 0.1) / 2.
    assert c1["seen_status"] is None and c1["tasks"] == 2 and c1["samples"] == 20
    assert c1["mean"] == pytest.approx(0.2)
    t1, t2 = one(tasks, task="t1", shots=0), one(tasks, task="t2", shots=0)
    assert (t1["mean"], t2["mean"], t1["templates"], t1["samples"]) == (0.3, 0.1, 2, 10)
    # Each task's rows are drawn independently, so the mean of two tasks spreads less than the mean of
    # their spreads (as sqrt(a^2 + b^2) < a + b), yet more than not at all.
    assert 0 < c1["high"] - c1["low"] < ((t1["high"] - t1["low"]) + (t2["high"] - t2["low"])) / 2 + 1e-9


def test_a_task_whose_templates_differ_in_label_gets_one_row_per_label():
    record, samples = load_run(RUNS / "tuned")
    record = replace(record, scores=[replace(s, seen_status="held_out_template") if (s.task, s.template) ==
                                     ("t1", "q") else s for s in record.scores])
    rows = [r for r in task_scores(record, samples, resamples=100) if r["task"] == "t1" and r["shots"] == 0]
    assert [(r["seen_status"], r["templates"], r["mean"]) for r in rows] == [
        ("seen", 1, pytest.approx(0.8)), ("held_out_template", 1, pytest.approx(0.6))]


def test_list_values_are_weighted_by_judgement_as_the_record_is():
    # IFEval-like: sample 1 has 3 instructions (2 followed), sample 2 has 1 (followed): 3/4, not (2/3 + 1) / 2.
    samples = [
        make_sample("x", "t", "h", 0, "0", {"inst": [1.0, 1.0, 0.0]}, cluster="k"),
        make_sample("x", "t", "h", 0, "1", {"inst": [1.0]}, cluster="k"),
    ]
    record = make_record([make_score("x", "t", 0, {"inst": 0.75}, cluster="k", template_hash="h")])
    (row,) = task_scores(record, samples, resamples=200)
    assert row["mean"] == pytest.approx(0.75) and row["samples"] == 2
    # Drawing row 1 twice gives 1.0, row 0 twice 2/3: the interval stays within those.
    assert 2 / 3 - 1e-9 <= row["low"] <= row["high"] <= 1.0


def test_constant_rows_give_a_degenerate_interval():
    record, samples = load_run(RUNS / "base")
    (row,) = [r for r in task_scores(record, samples, resamples=200) if r["task"] == "t3" and r["shots"] == 0]
    # t3 0-shot: both templates right on r0, r1 only; draws vary, so the interval is not degenerate ...
    assert row["low"] < row["mean"] < row["high"]
    all_right = [replace(s, metrics={"acc": 1.0, "acc_norm": 0.0}) for s in samples]
    (row,) = [r for r in task_scores(record, all_right, resamples=200) if r["task"] == "t3" and r["shots"] == 0]
    # ... but when every row scores the same, every draw does too.
    assert (row["mean"], row["low"], row["high"]) == (1.0, 1.0, 1.0)


def test_shots_curve_per_task_and_over_all_tasks(tuned):
    rows = shots_curve(tuned[0])
    assert one(rows, task="t1", shots=0)["mean"] == pytest.approx(0.7)
    assert one(rows, task="t3", shots=2)["mean"] == pytest.approx(2 / 3)
    # "(all)": each task counts once: 0-shot (0.7 + 0.1 + 5/12) / 3, 2-shot (0.9 + 0.3 + 2/3) / 3.
    assert one(rows, task="(all)", shots=0)["mean"] == pytest.approx((0.7 + 0.1 + 5 / 12) / 3)
    assert one(rows, task="(all)", shots=2)["mean"] == pytest.approx((0.9 + 0.3 + 2 / 3) / 3)
    assert len(rows) == 3 * 2 + 2 and {r["metric"] for r in rows} == {"acc"}


def test_generalization_gap_per_shot_count(tuned):
    zero, two = generalization_gap(tuned[0])
    # 0-shot: seen = t1's templates (0.8, 0.6) -> 0.7; held out task t2 (0, 0.2) -> 0.1; held out cluster
    # t3 (2/6, 3/6) -> 5/12; no held-out template. gap = 0.7 - (0.1 + 5/12) / 2.
    assert zero["shots"] == 0 and zero["held_out_template"] is None
    assert (zero["seen"], zero["held_out_task"], zero["held_out_cluster"]) == (
        pytest.approx(0.7), pytest.approx(0.1), pytest.approx(5 / 12))
    assert zero["gap"] == pytest.approx(0.7 - (0.1 + 5 / 12) / 2)
    assert two["gap"] == pytest.approx(0.9 - (0.3 + 2 / 3) / 2)


def test_generalization_gap_without_labels_or_without_a_side():
    assert generalization_gap(load_run(RUNS / "base")[0]) == []
    record = make_record([replace(score("t", "a", 0, 0.5), seen_status="held_out_cluster")])
    (row,) = generalization_gap(record)
    assert row["seen"] is None and row["held_out_cluster"] == 0.5 and row["gap"] is None
