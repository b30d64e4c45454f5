"""`harness tune --sweep clusters`: FLAN's ablation over the number of training clusters.

FLAN's Figure 6 holds some clusters out, tunes on 1, 2, ... k of the others, and plots the held-out
score against k: the claim is that every added cluster helps on what the model never saw. The sweep
reproduces that on any base model: point 0 is the base model itself, point k is a checkpoint tuned
on the first k training clusters (in `order`, or a seeded shuffle), and every point is evaluated on
the same held-out tasks, templates, shots and rows, so the points differ only by the tuning.

Everything resumes: a point whose folder holds its finished tuning is not retrained, a run directory
with finished samples is not recomputed, and `sweep.json` is rewritten after every point, so an
interrupted sweep loses at most the point it was on.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.run import run
from harness.eval.store import load_run
from harness.files import write_json_atomic
from harness.tasks.registry import Registry
from harness.tune.mixture import MixtureConfig, expand_held_out
from harness.tune.run import prepare_mixture, prepare_output, train_and_record
from harness.tune.trainer import Progress, TrainConfig

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepPlan:
    """The held-out clusters (with related ones) and the cumulative training cluster lists."""

    held_out: tuple[str, ...]
    order: tuple[str, ...]

    def trained(self, k: int) -> tuple[str, ...]:
        return self.order[:k]


def plan_sweep(registry: Registry, held_out: tuple[str, ...], tasks: str, order: tuple[str, ...] | None,
               seed: int) -> SweepPlan:
    """Which clusters are added in which order; an unknown or held-out cluster in `order` is an error."""
    expanded = expand_held_out(registry, held_out)
    available = sorted({t.cluster for t in registry.select(tasks)} - set(expanded))
    if not available:
        raise HarnessError(f"--held-out {','.join(held_out)} leaves no cluster to train on among --tasks {tasks}")
    if order is None:
        shuffled = list(available)
        random.Random(f"{seed}:sweep-order").shuffle(shuffled)
        return SweepPlan(expanded, tuple(shuffled))
    for cluster in order:
        if cluster not in available:
            why = "is held out" if cluster in expanded else "is not a cluster of the selected tasks"
            raise HarnessError(f"--sweep-order: {cluster!r} {why}; trainable clusters: {', '.join(available)}")
    if len(set(order)) != len(order):
        raise HarnessError("--sweep-order names a cluster twice")
    return SweepPlan(expanded, tuple(order))


def held_out_score(directory: Path, seed: int) -> dict[str, Any]:
    """The run's mean primary metric over its clusters, with a bootstrap interval (see analysis)."""
    from harness.analysis.scores import overall_score

    record, samples = load_run(directory)
    return overall_score(record, samples, seed=seed)


@dataclass(frozen=True)
class SweepCallbacks:
    """What the CLI draws: a line per stage, training progress, and evaluation progress."""

    stage: Callable[[str], None] = lambda message: None
    training: Callable[[Progress], None] | None = None
    evaluation: Callable[[str, int, int], None] | None = None


def run_sweep(
    registry: Registry, base: str, plan: SweepPlan, mixture_config: MixtureConfig, train_config: TrainConfig,
    eval_config: RunConfig, out: Path, chat: str, backend_factory: Callable[[str], Any],
    callbacks: SweepCallbacks = SweepCallbacks(),
) -> dict[str, Any]:
    """Tune and evaluate every point of the sweep; returns (and keeps writing) out/sweep.json."""
    out.mkdir(parents=True, exist_ok=True)
    points: list[dict[str, Any]] = []
    sweep: dict[str, Any] = {
        "base_model": base, "held_out_clusters": list(plan.held_out), "order": list(plan.order),
        "evaluation": {"tasks": eval_config.tasks, "shots": list(eval_config.shots), "limit": eval_config.limit,
                       "seed": eval_config.seed},
        "points": points,
    }
    for k in range(len(plan.order) + 1):
        trained = plan.trained(k)
        model = base
        if k:
            model_dir = out / f"clusters-{k:02d}"
            callbacks.stage(f"tuning on {k} cluster(s): {', '.join(trained)}")
            state = prepare_output(model_dir, base, resume=model_dir.is_dir())
            mixture = prepare_mixture(registry, base, replace(mixture_config, tasks=",".join(trained)), chat)
            train_and_record(mixture, base, train_config, model_dir, state, on_progress=callbacks.training)
            model = str(model_dir)
        callbacks.stage(f"evaluating {'the base model' if not k else model} on {', '.join(plan.held_out)}")
        run_dir, _ = run(eval_config, backend_factory(model), registry, out / "runs", run_id=f"clusters-{k:02d}",
                         progress=callbacks.evaluation, reuse_complete=True)
        score = held_out_score(run_dir, eval_config.seed)
        points.append({"n_clusters": k, "trained_clusters": list(trained), "checkpoint": model, "run": str(run_dir),
                       **score})
        write_json_atomic(out / SWEEP_FILE, sweep)
        log.info("sweep point %d: %s", k, json.dumps(score))
    return sweep
