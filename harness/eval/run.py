"""One run, end to end: plan, execute (resuming what is on disk), summarize, record.

Every sample is keyed by (task, template id, template hash, shots, row id). The plan is a pure
function of the command and the files it reads, so the same command after a crash plans the same
samples, skips the ones already on disk, and ends with the same record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from harness.engine.base import Backend
from harness.eval.config import RunConfig
from harness.eval.execute import ProgressCallback, execute
from harness.eval.plan import PlannedSample, Planner, load_task_splits
from harness.eval.spec import checkpoint_manifest, default_run_id, run_spec, seen_source
from harness.eval.store import RunStore
from harness.eval.summarize import summarize
from harness.files import PROJECT_ROOT, environment_info
from harness.seen import declare_seen, refuse_seen_with_manifest, warn_contamination
from harness.tasks.registry import Registry
from harness.tasks.rows import Split

log = logging.getLogger(__name__)


def run(
    config: RunConfig,
    backend: Backend,
    registry: Registry,
    out: Path,
    *,
    run_id: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    seen: str | None = None,
    reuse_complete: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Plan, execute (resuming if the run directory has finished samples) and record one run.

    With `reuse_complete`, a complete run of the same spec in the run directory is returned as it is
    (workflows such as the cluster sweep rerun every step and must find finished ones).

    `seen` declares the tasks a model without a training manifest was tuned on (see `declare_seen`);
    a checkpoint with a manifest is labelled by it, and both at once is refused."""
    started = time.time()
    tasks = registry.select(config.tasks)
    declared = declare_seen(registry, seen) if seen is not None else None
    if declared is not None:
        refuse_seen_with_manifest(backend.describe().get("local_path"))
    manifest = checkpoint_manifest(backend)
    if manifest is not None:
        warn_contamination(manifest, tasks)
    planner = Planner(config, backend.chat_format)
    tuned_chat = manifest.mixture_config.get("chat") if manifest is not None else None
    if isinstance(tuned_chat, bool) and tuned_chat != planner.chat:
        log.warning("the checkpoint was tuned with chat %s and is evaluated with chat %s: its seen templates are "
                    "not rendered as in training", "on" if tuned_chat else "off", "on" if planner.chat else "off")
    plan: list[PlannedSample] = []
    evaluation_splits: dict[str, Split] = {}
    for task in tasks:
        evaluation, pool = load_task_splits(task, config)
        evaluation_splits[task.name] = evaluation
        plan += planner.plan_task(task, evaluation, pool)
    spec = run_spec(config, backend, tasks, evaluation_splits, planner.chat, manifest, declared)
    directory = out / (run_id or default_run_id(spec["model"]["model"], spec))
    if reuse_complete and not overwrite and (record := RunStore.completed(directory, spec)) is not None:
        return directory, record
    store = RunStore(directory, spec, overwrite=overwrite)
    resumed = len(store.samples)
    if resumed:
        log.info("resuming %s: %d of %d samples already done", directory, resumed, len(plan))
    planned_at = time.time()
    prefixes = {s.key: planner.continuation_prefix(s.task, s.template) for s in plan}
    execute(plan, backend, store, prefixes, progress)
    finished_at = time.time()
    record = {
        **spec,
        "run_id": directory.name,
        "status": "complete",
        "seen_source": seen_source(manifest, declared),
        "environment": environment_info(PROJECT_ROOT),
        "counts": {"samples": len(plan)},
        "scores": summarize(plan, store.samples, config.seed, manifest, declared),
        "timings": {
            "started_unix": started, "finished_unix": finished_at, "resumed_samples": resumed,
            "plan_seconds": planned_at - started, "inference_seconds": finished_at - planned_at,
        },
    }
    store.finalize(record, [s.key for s in plan])
    return directory, record
