"""Requests to the backend, and each finished answer scored and written durably as it arrives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.engine.base import Backend, ChoiceRequest, GenerateRequest
from harness.eval.plan import PlannedSample
from harness.eval.store import RunStore
from harness.metrics import choice_metrics, generate_metrics

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
    """Run every sample not yet in the store, writing each batch durably as it finishes."""
    finished = sum(1 for s in plan if s.key in store.samples)
    total = len(plan)
    if progress:
        progress("requests", finished, total)

    choice = [s for s in plan if s.task.kind == "choice"]
    requests = [
        ChoiceRequest(s.prompt, tuple(prefixes[s.key] + o for o in s.row.options or ())) for s in choice
    ]
    done = {i for i, s in enumerate(choice) if s.key in store.samples}
    for batch in backend.score(requests, done):
        records = []
        for index, results in batch:
            sample = choice[index]
            logprobs = [r.logprob for r in results]
            assert sample.row.options is not None and sample.row.answer_index is not None
            metrics = choice_metrics(logprobs, sample.row.options, sample.row.answer_index)
            records.append(_sample_record(sample, {
                "options": list(sample.row.options), "continuation_prefix": prefixes[sample.key],
                "answer_index": sample.row.answer_index, "logprobs": logprobs,
                "is_greedy": [r.is_greedy for r in results], "num_tokens": [r.num_tokens for r in results],
                "metrics": {m: metrics[m] for m in sample.task.metrics},
            }))
        finished += len([r for r in records if r["key"] not in store.samples])
        store.append(records)
        if progress:
            progress("requests", finished, total)

    generate = [s for s in plan if s.task.kind == "generate"]
    gen_requests = [
        GenerateRequest(s.prompt, s.task.generation.max_new_tokens, s.task.generation.stop) for s in generate
    ]
    done = {i for i, s in enumerate(generate) if s.key in store.samples}
    for batch in backend.generate(gen_requests, done):
        records = []
        for index, response in batch:
            sample = generate[index]
            assert sample.row.references is not None
            records.append(_sample_record(sample, {
                "response": response, "references": list(sample.row.references),
                "metrics": generate_metrics(response, sample.row.references, sample.task.metrics, sample.source),
            }))
        finished += len([r for r in records if r["key"] not in store.samples])
        store.append(records)
        if progress:
            progress("requests", finished, total)
