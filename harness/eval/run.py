"""One run, end to end: plan, execute (resuming what is on disk), summarize, record.

Every sample is keyed by (task, template id, template hash, shots, row id). The plan is a pure
function of the command and the files it reads, so the same command after a crash plans the same
samples, skips the ones already on disk, and ends with the same record.

Under torchrun or `accelerate launch` (`harness.eval.distributed`) every rank plans the same samples
and computes its share of whole batches (`harness.eval.shares`) into its own shard of the run
directory; rank 0 holds the folder, merges the shards and writes the record one process would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from harness.engine.base import Backend
from harness.errors import HarnessError
from harness.eval.budget_plan import Budget, budgeted_plan
from harness.eval.config import RunConfig
from harness.eval.distributed import Group
from harness.eval.execute import ProgressCallback, check_against_plan, execute
from harness.eval.plan import PlannedSample, Planner, load_task_splits
from harness.eval.record import RunBudget, RunRecord, RunSpec
from harness.eval.rundir import check_out, check_run_id, run_directory, shard_name
from harness.eval.spec import checkpoint_manifest, default_run_id, run_spec, seen_source
from harness.eval.store import LOAD_REMEDY, RESUME_REMEDY, RunStore, SampleLog
from harness.eval.summarize import summarize
from harness.files import PROJECT_ROOT, environment_info
from harness.seen import (
    DeclaredSeen,
    TrainingManifest,
    declare_seen,
    refuse_seen_with_manifest,
    warn_contamination,
)
from harness.tasks.registry import Registry
from harness.tasks.rows import Split

log = logging.getLogger(__name__)


@dataclass
class _Prepared:
    """What every rank of a run computes alike before any sample: the plan, its spec and its folder."""

    config: RunConfig
    plan: list[PlannedSample]
    spec: RunSpec
    directory: Path
    prefixes: dict[str, str]
    manifest: TrainingManifest | None
    declared: DeclaredSeen | None
    budget: RunBudget | None = None


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
    group: Group | None = None,
    budget: Budget | None = None,
) -> tuple[Path, RunRecord]:
    """Plan, execute (resuming if the run directory has finished samples) and record one run.

    With `reuse_complete`, a complete run of the same spec in the run directory is returned as it is
    (workflows such as the cluster sweep rerun every step and must find finished ones).

    `seen` declares the tasks a model without a training manifest was tuned on (see `declare_seen`);
    a checkpoint with a manifest is labelled by it, and both at once is refused.

    The run directory is `out/run_id`, a plain folder name inside `out` (`harness.eval.rundir`); the
    run holds it locked, so a second process on it is refused rather than computing everything twice.
    Samples found there are rescored against the plan before they are reused.

    With `budget` (`harness.eval.budget_plan`), only the budget's cells of each (task, shots) are
    computed, plus any already on disk. A complete budgeted run in the folder is extended by a command
    that asks for cells it lacks (a larger budget, or none); one that has every cell asked for is
    returned as it is with `reuse_complete`.

    With `group` (a data-parallel launch), every rank calls this with the same arguments and gets the
    same record back; see `_run_ranks`."""
    started = time.time()
    if group is not None:
        prepared = group.agree(lambda: _prepare(config, backend, registry, out, run_id, seen))
        return _run_ranks(prepared, backend, group, started, overwrite, progress, reuse_complete, budget)
    prepared = _prepare(config, backend, registry, out, run_id, seen)
    found, extend = _existing(prepared, budget, overwrite, reuse_complete)
    if found is not None:
        return prepared.directory, found
    with RunStore(prepared.directory, prepared.spec, overwrite=overwrite, extend=extend) as store:
        check_against_plan(prepared.plan, store.samples, store.lines, prepared.prefixes, store.samples_path,
                           RESUME_REMEDY)
        prepared = _budgeted(prepared, budget, store.samples.keys())
        resumed = len(store.samples)
        if resumed:
            log.info("resuming %s: %d of %d samples already done", prepared.directory, resumed, len(prepared.plan))
        planned_at = time.time()
        cut_before = getattr(backend, "truncated", 0)  # optional on a Backend; counted over every call it served
        execute(_work(prepared.plan, store.samples.keys(), budget, extend), backend, store, prepared.prefixes,
                progress)
        truncated = getattr(backend, "truncated", 0) - cut_before
        record = _record(prepared, store, resumed, truncated, started, planned_at)
        store.finalize(record, [s.key for s in prepared.plan])
    return prepared.directory, record


def _prepare(config: RunConfig, backend: Backend, registry: Registry, out: Path, run_id: str | None,
             seen: str | None) -> _Prepared:
    """The plan, spec and run directory of the command, once its inputs are checked."""
    if run_id is not None:
        check_run_id(run_id)
    check_out(out)
    tasks = registry.select(config.tasks)
    refused = getattr(backend, "refused_kinds", {})  # optional on a Backend: task kind -> why it cannot answer it
    for task in tasks:
        if task.kind in refused:
            raise HarnessError(f"task {task.name!r} is a {task.kind} task: {refused[task.kind]}")
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
    return _Prepared(config, plan, spec, directory, prefixes, manifest, declared)


def _budgeted(prepared: _Prepared, budget: Budget | None, stored: Collection[str]) -> _Prepared:
    """The run as a budget cuts it (see `harness.eval.budget_plan`); unchanged without one."""
    if budget is None:
        return prepared
    plan, record = budgeted_plan(prepared.plan, budget, prepared.config.seed, stored)
    return replace(prepared, plan=plan, budget=record)


def _work(plan: list[PlannedSample], done: Collection[str], budget: Budget | None,
          extend: bool) -> list[PlannedSample]:
    """What `execute` is given. A full run's whole plan, done samples included: its batches are
    planned over the whole plan, so a resumed run meets the batch shapes an uninterrupted one had
    (and the same numbers to the bit), recomputing a partly done batch. A budgeted run, or one
    extending a budgeted run, only its missing samples: its plan grew since the cells on disk were
    computed, so no batch shape is kept anyway, and a batch holding old cells would compute them
    again. Its cells equal the full run's to float32 rounding (a log-likelihood computed in a batch
    of other shapes can differ in its last bits); prompts, choices, metrics and generations alike.
    With a batch-invariant backend (`--batch-invariant`: a forward per request) they are equal bit
    for bit."""
    if budget is None and not extend:
        return plan
    return [sample for sample in plan if sample.key not in done]


def _existing(prepared: _Prepared, budget: Budget | None, overwrite: bool,
              reuse_complete: bool) -> tuple[RunRecord | None, bool]:
    """What a complete run of this spec in the run directory means for the command: its record, to be
    returned as it is (`reuse_complete`, and it holds every cell asked for, checked against the plan),
    or whether to extend it (a budgeted run lacking cells asked for). (None, False) otherwise: no such
    run, or one the store then refuses to redo without --overwrite."""
    if overwrite:
        return None, False
    found = RunStore.completed(prepared.directory, prepared.spec)
    if found is None:
        return None, False
    record, samples = found
    stored = {s.key: s for s in samples}
    wanted = _budgeted(prepared, budget, stored.keys()).plan
    if any(s.key not in stored for s in wanted):
        return None, record.budget is not None
    if not reuse_complete:
        return None, False
    check_against_plan(wanted, stored, {s.key: i for i, s in enumerate(samples, 1)}, prepared.prefixes,
                       prepared.directory / "samples.jsonl", LOAD_REMEDY, complete=True)
    return record, False


def _record(prepared: _Prepared, store: RunStore, resumed: int, truncated: int, started: float,
            planned_at: float) -> RunRecord:
    """The run record of a store holding every planned sample."""
    finished_at = time.time()
    return RunRecord(
        spec=prepared.spec, run_id=prepared.directory.name, status="complete",
        seen_source=seen_source(prepared.manifest, prepared.declared), environment=environment_info(PROJECT_ROOT),
        counts={"samples": len(prepared.plan), "truncated_prompts": truncated},
        scores=summarize(prepared.plan, store.samples, prepared.config.seed, prepared.manifest, prepared.declared),
        timings={
            "started_unix": started, "finished_unix": finished_at, "resumed_samples": resumed,
            "plan_seconds": planned_at - started, "inference_seconds": finished_at - planned_at,
        },
        budget=prepared.budget,
    )


def _run_ranks(prepared: _Prepared, backend: Backend, group: Group, started: float, overwrite: bool,
               progress: ProgressCallback | None, reuse_complete: bool,
               budget: Budget | None) -> tuple[Path, RunRecord]:
    """One rank of a data-parallel run. Rank 0 opens the run directory as one process would (the lock,
    the spec, resuming samples.jsonl with every shard an earlier job left folded in) and tells every
    rank what is done; each rank computes its share into its own log (rank 0: samples.jsonl, rank R:
    samples.rank<R>.jsonl); once all are through, rank 0 folds the shards in and writes the record,
    which every rank returns. Each backend counts truncated prompts over every request list, as one
    process does, so rank 0's count is the record's."""
    opened: list[RunStore] = []

    def open_store() -> RunRecord | tuple[list[str], bool]:
        found, extend = _existing(prepared, budget, overwrite, reuse_complete)
        if found is not None:
            return found
        store = RunStore(prepared.directory, prepared.spec, overwrite=overwrite, extend=extend)
        opened.append(store)
        check_against_plan(prepared.plan, store.samples, store.lines, prepared.prefixes, store.samples_path,
                           RESUME_REMEDY)
        return sorted(store.samples), extend

    try:
        found = group.broadcast(open_store)
        if isinstance(found, RunRecord):
            return prepared.directory, found
        done, extend = set(found[0]), found[1]
        prepared = _budgeted(prepared, budget, done)
        if done and group.main:
            log.info("resuming %s: %d of %d samples already done", prepared.directory, len(done), len(prepared.plan))
        planned_at = time.time()
        cut_before = getattr(backend, "truncated", 0)
        own = opened[0] if group.main else SampleLog(prepared.directory / shard_name(group.rank))
        job = _JobProgress(progress, prepared, group.world_size) if progress and group.main else progress
        work = _work(prepared.plan, done, budget, extend)
        group.agree(lambda: execute(work, backend, own, prepared.prefixes, job, done=done,
                                    rank=group.rank, world_size=group.world_size))
        if isinstance(job, _JobProgress):
            job.others_done()
        truncated = getattr(backend, "truncated", 0) - cut_before

        def finish() -> RunRecord:
            store = opened[0]
            store.merge_shards()
            record = _record(prepared, store, len(done), truncated, started, planned_at)
            store.finalize(record, [s.key for s in prepared.plan])
            return record

        return prepared.directory, group.broadcast(finish)
    finally:
        for store in opened:
            store.close()


class _JobProgress:
    """Rank 0's progress over the whole job: its own samples (the resumed ones included) plus the lines
    the other ranks' shards have gained, read incrementally whenever rank 0 reports."""

    def __init__(self, progress: ProgressCallback, prepared: _Prepared, world_size: int) -> None:
        self._progress = progress
        self._total = len(prepared.plan)
        self._shards = [prepared.directory / shard_name(rank) for rank in range(1, world_size)]
        self._read = [0] * len(self._shards)
        self._others = 0
        self._own = 0

    def __call__(self, phase: str, finished: int, total: int) -> None:
        for index, shard in enumerate(self._shards):
            try:
                with shard.open("rb") as handle:
                    handle.seek(self._read[index])
                    chunk = handle.read()
            except FileNotFoundError:  # that rank has written nothing yet
                continue
            self._read[index] += len(chunk)
            self._others += chunk.count(b"\n")
        self._own = finished
        self._progress(phase, self._own + self._others, self._total)

    def others_done(self) -> None:
        """Every rank is through: a last report, once the others' last lines are counted."""
        self("requests", self._own, self._total)
