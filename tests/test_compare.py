"""`compare_runs` and `harness compare` on small stored runs, against numbers worked out by hand.

tests/data/runs holds four runs of three tasks (t1, t2 in cluster c1; t3 in c2), two templates (p,
q), shots 0 and 2, rows r0-r4, one 0/1 `acc` per sample (`acc_norm` = 1 - acc, so ranking by the
wrong metric shows):
- base: the baseline.
- tuned: better on t1, worse on t3 at 0-shot, t2 unchanged; t3 has a sixth row r5 that base lacks.
- base-copy: base's samples under another run id and model name.
- edited: t1 with templates whose hash changed, so it shares no sample with base.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.analysis.compare import compare_runs, run_label
from harness.cli import main
from harness.errors import HarnessError
from harness.eval.store import load_run
from tests.test_record import make_record

RUNS = Path(__file__).parent / "data" / "runs"


@pytest.fixture(scope="module")
def runs() -> dict:
    return {name: load_run(RUNS / name) for name in ("base", "tuned", "base-copy", "edited")}


def by(rows: list[dict], **key) -> dict:
    (row,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return row


def test_means_deltas_and_counts_match_a_hand_computation(runs):
    result = compare_runs(runs["base"], runs["tuned"], seed=0, resamples=200)
    assert (result["a"], result["b"]) == ("base (base-llama)", "tuned (tuned-llama)")
    # tuned's t3 rows r5 (4 samples: 2 templates x 2 shot counts) are not in base and do not count.
    assert (result["shared_samples"], result["only_a"], result["only_b"]) == (60, 0, 4)
    # Task = mean over templates of the template's accuracy over r0-r4 (acc, not acc_norm):
    #   t1 0-shot base (p 1/5 + q 2/5) / 2 = 0.3, tuned (4/5 + 3/5) / 2 = 0.7 -> +0.4
    #   t1 2-shot base (2/5 + 3/5) / 2 = 0.5, tuned (5/5 + 4/5) / 2 = 0.9 -> +0.4
    #   t2 identical samples: 0-shot (0 + 1/5) / 2 = 0.1, 2-shot (1/5 + 2/5) / 2 = 0.3 -> 0
    #   t3 0-shot base (2/5 + 2/5) / 2 = 0.4, tuned on the shared rows (1/5 + 2/5) / 2 = 0.3 -> -0.1
    #   t3 2-shot 0.6 in both -> 0
    expected_tasks = {("t1", 0): (0.3, 0.7), ("t1", 2): (0.5, 0.9), ("t2", 0): (0.1, 0.1), ("t2", 2): (0.3, 0.3),
                      ("t3", 0): (0.4, 0.3), ("t3", 2): (0.6, 0.6)}
    assert len(result["tasks"]) == len(expected_tasks)
    for (task, shots), (a, b) in expected_tasks.items():
        row = by(result["tasks"], task=task, shots=shots)
        assert (row["metric"], row["n"]) == ("acc", 10)  # 2 templates x 5 rows
        assert (row["a"], row["b"], row["delta"]) == (pytest.approx(a), pytest.approx(b), pytest.approx(b - a))
    # Cluster = mean over its tasks: c1 0-shot base (0.3 + 0.1) / 2 = 0.2, tuned (0.7 + 0.1) / 2 = 0.4;
    # c1 2-shot (0.5 + 0.3) / 2 = 0.4 and (0.9 + 0.3) / 2 = 0.6; c2 is t3 alone.
    expected_clusters = {("c1", 0): (0.2, 0.4, 20), ("c1", 2): (0.4, 0.6, 20), ("c2", 0): (0.4, 0.3, 10),
                         ("c2", 2): (0.6, 0.6, 10)}
    for (cluster, shots), (a, b, n) in expected_clusters.items():
        row = by(result["clusters"], cluster=cluster, shots=shots)
        assert (row["a"], row["b"], row["n"]) == (pytest.approx(a), pytest.approx(b), n)
        assert row["delta"] == pytest.approx(b - a)
    # Overall = mean over clusters, each cluster the mean over its shot counts:
    #   base (0.2 + 0.4) / 2 = 0.3 and (0.4 + 0.6) / 2 = 0.5 -> 0.4
    #   tuned (0.4 + 0.6) / 2 = 0.5 and (0.3 + 0.6) / 2 = 0.45 -> 0.475
    overall = result["overall"]
    assert (overall["shots"], overall["metric"], overall["n"]) == ([0, 2], "acc", 60)
    assert (overall["a"], overall["b"], overall["delta"]) == (0.4, 0.475, 0.075)


def test_intervals_are_reproducible_contain_the_delta_and_mark_significance(runs):
    first = compare_runs(runs["base"], runs["tuned"], seed=3, resamples=300)
    assert compare_runs(runs["base"], runs["tuned"], seed=3, resamples=300) == first
    rows = [first["overall"], *first["clusters"], *first["tasks"]]
    for row in rows:
        assert row["low"] <= row["delta"] <= row["high"]
        assert row["significant"] == (row["low"] > 0 or row["high"] < 0)
    # Unchanged samples give a degenerate interval; t1 improves on 4 of 5 rows at 0-shot, so every
    # draw short of five picks from {r0, r4} (probability 0.4^5 = 1%) sees a gain.
    assert (by(first["tasks"], task="t2", shots=0)["low"], by(first["tasks"], task="t2", shots=0)["high"]) == (0, 0)
    t1 = by(first["tasks"], task="t1", shots=0)
    assert t1["low"] > 0 and t1["significant"]
    # The draws are the same rows for both runs whichever is A: swapping the runs mirrors every interval.
    swapped = compare_runs(runs["tuned"], runs["base"], seed=3, resamples=300)
    for row, mirror in zip(first["tasks"], swapped["tasks"], strict=True):
        assert (mirror["delta"], mirror["low"], mirror["high"]) == (-row["delta"], -row["high"], -row["low"])


def test_identical_samples_give_zero_delta_and_a_zero_interval(runs):
    result = compare_runs(runs["base"], runs["base-copy"], seed=0, resamples=200)
    assert (result["shared_samples"], result["only_a"], result["only_b"]) == (60, 0, 0)
    for row in [result["overall"], *result["clusters"], *result["tasks"]]:
        assert (row["delta"], row["low"], row["high"], row["significant"]) == (0.0, 0.0, 0.0, False)
        assert row["a"] == row["b"]


def test_runs_sharing_no_sample_are_refused_naming_both(runs):
    with pytest.raises(HarnessError) as error:
        compare_runs(runs["base"], runs["edited"])
    message = str(error.value)
    assert message.startswith("base (base-llama) and edited (base-llama) share no samples")
    assert "--tasks/--templates/--shots/--limit" in message and "\n" not in message


def test_a_task_ranked_by_different_metrics_is_refused(runs):
    record, samples = runs["tuned"]
    record = replace(record, scores=[replace(s, metrics={"acc_norm": s.metrics["acc_norm"]}) if s.task == "t2" else s
                                     for s in record.scores])
    with pytest.raises(HarnessError, match="task 't2' is ranked by 'acc' in base .* and by 'acc_norm' in tuned"):
        compare_runs(runs["base"], (record, samples))


def test_a_sample_missing_a_field_is_refused(runs):
    record, samples = runs["tuned"][0], list(runs["tuned"][1])
    samples[7] = {k: v for k, v in samples[7].to_json().items() if k != "template_hash"}  # as read from a file
    with pytest.raises(HarnessError, match=r"tuned \(tuned-llama\): sample 7 of samples.jsonl lacks field "
                                           "'template_hash'"):
        compare_runs(runs["base"], (record, samples))


@pytest.mark.parametrize(("settings", "message"), [
    ({"resamples": 0}, "--resamples must be at least 1"),
    ({"confidence": 1.0}, "--confidence must be between 0 and 1"),
    ({"seed": -1}, "--seed must be a non-negative integer"),
])
def test_bad_bootstrap_settings_are_refused(runs, settings, message):
    with pytest.raises(HarnessError, match=message):
        compare_runs(runs["base"], runs["tuned"], **settings)


def test_run_label_uses_the_folder_name_and_the_model_short_name(runs):
    record = runs["tuned"][0]
    assert run_label(record) == "tuned (tuned-llama)"
    assert run_label(record, "elsewhere/tuned") == "elsewhere/tuned (tuned-llama)"
    assert run_label(make_record([], run_id="r")) == "r"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_compares_each_later_run_with_the_first_and_writes_json(tmp_path, capsys):
    out = tmp_path / "cmp" / "comparison.json"
    code = main(["compare", str(RUNS / "base"), str(RUNS / "tuned"), str(RUNS / "base-copy"), "--seed", "3",
                 "--resamples", "300", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "A = base (base-llama), B = tuned (tuned-llama)" in printed
    assert "A = base (base-llama), B = base-copy (base-llama-again)" in printed
    assert "60 shared samples; only in A: 0, only in B: 4" in printed
    overall = next(line for line in printed.splitlines() if "(overall)" in line)
    assert "40.0" in overall and "47.5" in overall and "+7.5 [" in overall
    t1 = next(line for line in printed.splitlines() if " t1 " in line and " 0 " in line)
    assert "30.0" in t1 and "70.0" in t1 and "+40.0 [" in t1 and t1.rstrip(" │").endswith("*")
    stored = json.loads(out.read_text())
    assert stored["runs"] == [str(RUNS / "base"), str(RUNS / "tuned"), str(RUNS / "base-copy")]
    first, second = stored["comparisons"]
    assert first == compare_runs(load_run(RUNS / "base"), load_run(RUNS / "tuned"), seed=3, resamples=300)
    assert second["overall"]["delta"] == 0.0 and second["b"] == "base-copy (base-llama-again)"


@pytest.mark.parametrize(("runs", "expected"), [
    (["base", "edited"], "base (base-llama) and edited (base-llama) share no samples"),
    (["base", "missing"], "missing: no such run folder"),
    (["base"], "harness compare needs at least two run folders"),
])
def test_cli_errors_are_one_line_and_exit_2(runs, expected, capsys):
    assert main(["compare", *(str(RUNS / name) for name in runs)]) == 2
    assert expected in error_line(capsys)


def test_cli_refuses_a_folder_without_run_json(tmp_path, capsys):
    (tmp_path / "spec.json").write_text("{}")
    assert main(["compare", str(RUNS / "base"), str(tmp_path)]) == 2
    assert f"{tmp_path}: no run.json; the run is incomplete" in error_line(capsys)
    assert main(["compare", str(RUNS / "base"), str(tmp_path / "..")]) == 2
    assert "not a run folder (no run.json)" in error_line(capsys)


def test_by_seen_status_compares_each_label_on_its_own_samples(runs):
    from harness.analysis.compare import compare_by_seen_status

    rows = compare_by_seen_status(runs["base"], runs["tuned"], seed=0, resamples=200)
    # tuned labels t1 seen, t2 held-out task (cluster c1), t3 held-out cluster (c2); see the module docstring.
    assert [(r["seen_status"], r["cluster"], r["shots"]) for r in rows] == [
        ("seen", "(overall)", [0, 2]), ("seen", "c1", 0), ("seen", "c1", 2),
        ("held_out_task", "(overall)", [0, 2]), ("held_out_task", "c1", 0), ("held_out_task", "c1", 2),
        ("held_out_cluster", "(overall)", [0, 2]), ("held_out_cluster", "c2", 0), ("held_out_cluster", "c2", 2),
    ]
    # Each label sees only its task: seen is t1 alone (+0.4 at both shot counts), held-out task is t2
    # (identical samples), held-out cluster is t3 (-0.1 at 0-shot, 0 at 2-shot; overall -0.05).
    seen, held_task, held_cluster = rows[0], rows[3], rows[6]
    assert (seen["a"], seen["b"], seen["delta"], seen["n"]) == (pytest.approx(0.4), pytest.approx(0.8),
                                                                pytest.approx(0.4), 20)
    assert (held_task["delta"], held_task["low"], held_task["high"], held_task["significant"]) == (0, 0, 0, False)
    assert held_cluster["delta"] == pytest.approx(-0.05) and held_cluster["n"] == 20
    assert compare_by_seen_status(runs["tuned"], runs["base"]) == [], "an unlabelled run has no label to split by"
