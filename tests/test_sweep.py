"""`harness tune --sweep clusters` end to end on the tiny model: one checkpoint per added cluster, the
base and every checkpoint scored on the same held-out samples, and a rerun that retrains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.scores import overall_score
from harness.cli import main
from harness.eval.store import load_run
from harness.seen import read_manifest
from harness.tasks.registry import Registry
from harness.tune.sweep import plan_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


EVAL_SEED = 1234  # `harness run`'s default seed, which the sweep's evaluation keeps


def _sweep_args(base: Path, out: Path, *extra: str) -> list[str]:
    return ["tune", "--sweep", "clusters", "--base", str(base), "--held-out", "comparison",
            "--sweep-order", "arithmetic,string_transform", "--steps", "2", "--total", "16", "--batch-size", "4",
            "--save-every", "0", "--eval-limit", "2", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def swept(tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    assert main(_sweep_args(tiny_models["tiny-llama"], out)) == 0
    return out


def test_sweep_tunes_one_checkpoint_per_added_cluster_and_scores_each_on_the_held_out_clusters(swept, tiny_models):
    sweep = json.loads((swept / "sweep.json").read_text())
    assert sweep["held_out_clusters"] == ["comparison"] and sweep["order"] == ["arithmetic", "string_transform"]
    points = sweep["points"]
    assert [p["n_clusters"] for p in points] == [0, 1, 2]
    assert [p["trained_clusters"] for p in points] == [[], ["arithmetic"], ["arithmetic", "string_transform"]]
    assert points[0]["checkpoint"] == str(tiny_models["tiny-llama"])
    for point in points[1:]:
        manifest = read_manifest(Path(point["checkpoint"]))
        assert manifest.trained_clusters() == set(point["trained_clusters"])
        assert manifest.held_out_clusters == ("comparison",)
    keys = []
    for point in points:
        record, samples = load_run(Path(point["run"]))
        assert {s.task for s in samples} == {"compare_length", "compare_numbers"}
        keys.append(sorted((s.task, s.template, s.shots, s.row_id) for s in samples))
        assert {k: point[k] for k in ("metric", "mean", "low", "high")} == {
            k: v for k, v in overall_score(record, samples, seed=EVAL_SEED).items()
            if k in ("metric", "mean", "low", "high")}
        assert point["low"] <= point["mean"] <= point["high"]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 2 * 2 * 6, "every point scores the same samples"


def test_rerunning_a_finished_sweep_retrains_nothing(swept, tiny_models, capsys):
    weights = swept / "clusters-01" / "model.safetensors"
    before, sweep_before = weights.stat().st_mtime_ns, json.loads((swept / "sweep.json").read_text())
    assert main(_sweep_args(tiny_models["tiny-llama"], swept)) == 0
    assert weights.stat().st_mtime_ns == before
    assert json.loads((swept / "sweep.json").read_text())["points"] == sweep_before["points"]
    assert "Cluster sweep" in capsys.readouterr().out


def test_sweep_order_is_checked_before_any_model_loads(tiny_models, tmp_path, capsys):
    code = main(_sweep_args(tiny_models["tiny-llama"], tmp_path / "s", "--sweep-order", "arithmetic,comparison"))
    assert code == 2
    err = capsys.readouterr().err
    assert "'comparison' is held out" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_default_order_is_a_seeded_shuffle_of_every_trainable_cluster():
    registry = Registry()
    plan = plan_sweep(registry, ("comparison",), "builtin", None, seed=0)
    assert sorted(plan.order) == ["arithmetic", "extraction", "lexicon_classification", "list_operations",
                                  "string_transform"]
    assert plan_sweep(registry, ("comparison",), "builtin", None, seed=0) == plan
    assert plan.trained(2) == plan.order[:2]
