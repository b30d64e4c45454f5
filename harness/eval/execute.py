"""Requests to the backend, and each finished answer scored and written durably as it arrives."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from harness.engine.base import Backend
from harness.errors import HarnessError
from harness.eval.plan import PlannedSample
from harness.eval.record import Sample
from harness.eval.shares import my_share, units
from harness.eval.store import SampleLog
from harness.eval.verify import first_difference, short
from harness.tasks.kinds import get_kind, kind_names

ProgressCallback = Callable[[str, int, int], None]
"""Called as (phase, finished, total) after every batch; the CLI draws it, the library never prints."""


def _sample_record(sample: PlannedSample, scored: dict[str, Any]) -> Sample:
    """The finished sample: its plan (identity, prompt, `report_by` fields) and the kind's scored fields."""
    groups = {field: str(sample.source.get(field)) for field in sample.task.report_by} or None
    return Sample(
        task=sample.task.name, cluster=sample.task.cluster, template=sample.template.id,
        template_hash=sample.template.hash, shots=sample.shots, row_id=sample.row_id,
        exemplars=list(sample.exemplar_ids), prompt=sample.prompt, groups=groups, **scored,
    )


def check_against_plan(plan: list[PlannedSample], stored: Mapping[str, Sample], lines: Mapping[str, int],
                       prefixes: dict[str, str], path: Path, remedy: str, complete: bool = False) -> None:
    """Refuse a stored sample that is not what its plan and its stored answer give.

    A resumed (or reused) sample is trusted only as far as its answer: the kind rescores that answer
    against the planned row exactly as `execute` did, and every field (prompt, options, references,
    metrics) must come out as stored, so an edited metric or a line of another run is refused, naming
    its line. A `complete` run must also hold every planned sample."""
    for planned in plan:
        sample = stored.get(planned.key)
        if sample is None:
            if complete:
                raise HarnessError(f"{path}: lacks the planned sample {planned.key}; {remedy}")
            continue
        kind = get_kind(planned.task.kind)
        answer, problem = kind.stored_answer(sample.to_json())
        if answer is None and problem is None:
            continue
        if isinstance(answer, tuple) and len(answer) != len(planned.row.options or ()):
            problem = f"has {len(answer)} log-likelihoods for the {len(planned.row.options or ())} planned options"
        if problem is None:
            scored = kind.score(planned.task, planned.row, answer, prefixes[planned.key], planned.source)
            difference = first_difference(sample.to_json(), _sample_record(planned, scored).to_json())
            if difference is not None:
                field, value, expected = difference
                problem = (f"has {field} {short(value)}, and its plan and stored answer give {short(expected)} "
                           "(the line was edited, or belongs to another run)")
        if problem is not None:
            raise HarnessError(f"{path} line {lines[planned.key]}: sample {planned.key} {problem}; {remedy}")


def execute(
    plan: list[PlannedSample], backend: Backend, store: SampleLog, prefixes: dict[str, str],
    progress: ProgressCallback | None = None, *, done: Collection[str] | None = None, rank: int = 0,
    world_size: int = 1,
) -> None:
    """Run every sample not yet done, writing each batch durably as it finishes.

    The samples of each task kind go to the backend together (all choice questions, then all
    generations), so the backend can batch them across tasks. `done` (default: the store's samples)
    is what is already finished; in a data-parallel run it is every sample any rank finished, `store`
    is this rank's own log, and the rank computes only its share of the rest (`harness.eval.shares`),
    reporting progress through its share."""
    finished_keys = store.samples.keys() if done is None else done
    work = []
    for name in kind_names():
        kind = get_kind(name)
        members = [s for s in plan if s.task.kind == name]
        requests = [kind.request(s.task, s.prompt, s.row, prefixes[s.key]) for s in members]
        work.append((kind, members, requests, {i for i, s in enumerate(members) if s.key in finished_keys}))
    if world_size == 1:
        shares = [set(range(len(requests))) - skipped for _, _, requests, skipped in work]
    else:
        shares = my_share([units(backend, requests, skipped, world_size) for _, _, requests, skipped in work],
                          [skipped for *_, skipped in work], rank, world_size)
    finished = sum(1 for s in plan if s.key in finished_keys)
    total = finished + sum(len(mine) for mine in shares)
    if progress:
        progress("requests", finished, total)
    for (kind, members, requests, _), mine in zip(work, shares, strict=True):
        # Called even when nothing is left, as a backend counts its truncated prompts over the whole list.
        for batch in kind.answers(backend, requests, set(range(len(requests))) - mine):
            records = []
            for index, answer in batch:
                if index not in mine:  # a batch shared with another rank's requests answers those too
                    continue
                sample = members[index]
                records.append(_sample_record(sample, kind.score(sample.task, sample.row, answer,
                                                                 prefixes[sample.key], sample.source)))
            finished += len([r for r in records if r.key not in store.samples])
            store.append(records)
            if progress:
                progress("requests", finished, total)
