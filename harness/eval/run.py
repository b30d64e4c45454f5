"""One run, end to end: plan, execute (resuming what is on disk), summarize, record.

Every sample is keyed by (task, template id, template hash, shots, row id). The plan is a pure
function of the command and the files it reads, so the same command after a crash plans the same
samples, skips the ones already on disk, and ends with the same record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harness.engine.base import Backend
from harness.eval.config import RunConfig
from harness.eval.execute import ProgressCallback, check_against_plan, execute
from harness.eval.plan import PlannedSample, Planner, load_task_splits
from harness.eval.record import RunRecord
from harness.eval.rundir import check_out, check_run_id, run_directory
from harness.eval.spec import checkpoint_manifest, default_run_id, run_spec, seen_source
from harness.eval.store import LOAD_REMEDY, RESUME_REMEDY, RunStore
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
) -> tuple[Path, RunRecord]:
    """Plan, execute (resuming if the run directory has finished samples) and record one run.

    With `reuse_complete`, a complete run of the same spec in the run directory is returned as it is
    (workflows such as the cluster sweep rerun every step and must find finished ones).

    `seen` declares the tasks a model without a training manifest was tuned on (see `declare_seen`);
    a checkpoint with a manifest is labelled by it, and both at once is refused.

    The run directory is `out/run_id`, a plain folder name inside `out` (`harness.eval.rundir`); the
    run holds it locked, so a second process on it is refused rather than computing everything twice.
    Samples found there are rescored against the plan before they are reused."""
    started = time.time()
    if run_id is not None:
        check_run_id(run_id)
    check_out(out)
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
    directory = run_directory(out, run_id or default_run_id(spec))
    prefixes = {s.key: planner.continuation_prefix(s.task, s.template) for s in plan}
    if reuse_complete and not overwrite and (found := RunStore.completed(directory, spec)) is not None:
        record, samples = found
        check_against_plan(plan, {s.key: s for s in samples}, {s.key: i for i, s in enumerate(samples, 1)}, prefixes,
                           directory / "samples.jsonl", LOAD_REMEDY, complete=True)
        return directory, record
    with RunStore(directory, spec, overwrite=overwrite) as store:
        check_against_plan(plan, store.samples, store.lines, prefixes, store.samples_path, RESUME_REMEDY)
        resumed = len(store.samples)
        if resumed:
            log.info("resuming %s: %d of %d samples already done", directory, resumed, len(plan))
        planned_at = time.time()
        cut_before = getattr(backend, "truncated", 0)  # optional on a Backend; counted over every call it served
        execute(plan, backend, store, prefixes, progress)
        truncated = getattr(backend, "truncated", 0) - cut_before
        finished_at = time.time()
        record = RunRecord(
            spec=spec, run_id=directory.name, status="complete", seen_source=seen_source(manifest, declared),
            environment=environment_info(PROJECT_ROOT), counts={"samples": len(plan), "truncated_prompts": truncated},
            scores=summarize(plan, store.samples, config.seed, manifest, declared),
            timings={
                "started_unix": started, "finished_unix": finished_at, "resumed_samples": resumed,
                "plan_seconds": planned_at - started, "inference_seconds": finished_at - planned_at,
            },
        )
        store.finalize(record, [s.key for s in plan])
    return directory, record
