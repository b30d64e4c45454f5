"""Requests to the backend, and each finished answer scored and written durably as it arrives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.engine.base import Backend
from harness.eval.plan import PlannedSample
from harness.eval.store import RunStore
from harness.tasks.kinds import get_kind, kind_names

ProgressCallback = Callable[[str, int, int], None]
"""Called as (phase, finished, total) after every batch; the CLI draws it, the library never prints."""


def _sample_record(sample: PlannedSample, extra: dict[str, Any]) -> dict[str, Any]:
    record = {
        "key": sample.key, "task": sample.task.name, "cluster": sample.task.cluster,
        "template": sample.template.id, "template_hash": sample.template.hash, "shots": sample.shots,
        "row_id": sample.row_id, "exemplars": list(sample.exemplar_ids), "prompt": sample.prompt,
    }
    if sample.task.report_by:
        record["groups"] = {field: str(sample.source.get(field)) for field in sample.task.report_by}
    record.update(extra)
    return record


def execute(
    plan: list[PlannedSample], backend: Backend, store: RunStore, prefixes: dict[str, str],
    progress: ProgressCallback | None = None,
) -> None:
    """Run every sample not yet in the store, writing each batch durably as it finishes.

    The samples of each task kind go to the backend together (all choice questions, then all
    generations), so the backend can batch them across tasks."""
    finished = sum(1 for s in plan if s.key in store.samples)
    total = len(plan)
    if progress:
        progress("requests", finished, total)
    for name in kind_names():
        kind = get_kind(name)
        members = [s for s in plan if s.task.kind == name]
        requests = [kind.request(s.task, s.prompt, s.row, prefixes[s.key]) for s in members]
        done = {i for i, s in enumerate(members) if s.key in store.samples}
        for batch in kind.answers(backend, requests, done):
            records = []
            for index, answer in batch:
                sample = members[index]
                records.append(_sample_record(sample, kind.score(sample.task, sample.row, answer,
                                                                 prefixes[sample.key], sample.source)))
            finished += len([r for r in records if r["key"] not in store.samples])
            store.append(records)
            if progress:
                progress("requests", finished, total)
