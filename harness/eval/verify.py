"""Checks that stored samples and scores are what their stored answers give.

A sample's metrics are a function of what the model answered (a choice sample's log-likelihoods, a
generate sample's response) and of the row, so a metric edited in samples.jsonl, or a mean edited in
run.json, must not flow silently into a report: an edited accuracy of 0.40 once read back as 1.00.
Where the stored sample alone determines a metric (acc and acc_norm from log-likelihoods, options and
answer index; exact_match, f1 and rouge_l from response and references) it is recomputed here; every
score's mean in run.json is recomputed from its samples, which catches an edit to a metric that needs
the row (IFEval, NIv2) as soon as run.json and samples.jsonl disagree. A resumed or reused run checks
more: each sample against its plan (`harness.eval.execute.check_against_plan`).

Floats are compared within `TOLERANCE`; NaN equals NaN (a sample of a model that gave NaN stays valid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.metrics import choice_metrics, flatten, generate_metrics

TOLERANCE = 1e-9
SELF_CONTAINED_GENERATE_METRICS = ("exact_match", "f1", "rouge_l")
"""Generate metrics of (response, references) alone; the others (IFEval, NIv2) need the row."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """Equal JSON values, numbers within TOLERANCE."""
    return first_difference(a, b) is None


def first_difference(stored: Any, expected: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first field (its path, stored and expected values) where two JSON values differ, or None."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in sorted(set(stored) | set(expected)):
            where = f"{path}.{key}" if path else key
            if key not in stored or key not in expected:
                return where, stored.get(key, "absent"), expected.get(key, "absent")
            found = first_difference(stored[key], expected[key], where)
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(expected, list) and len(stored) == len(expected):
        for index, (a, b) in enumerate(zip(stored, expected, strict=True)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    if _number(stored) and _number(expected):
        if (math.isnan(stored) and math.isnan(expected)) or math.isclose(stored, expected, rel_tol=TOLERANCE,
                                                                          abs_tol=TOLERANCE):
            return None
        return path, stored, expected
    return None if stored == expected and type(stored) is type(expected) else (path, stored, expected)


def short(value: Any) -> str:
    """A value as an error line shows it: its repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def recomputed_metrics(sample: Sample) -> dict[str, float | list[float]]:
    """The sample's metrics that its stored fields determine on their own (see the module docstring)."""
    if sample.logprobs is not None and sample.options is not None and sample.answer_index is not None:
        if len(sample.logprobs) != len(sample.options) or not 0 <= sample.answer_index < len(sample.options):
            raise ValueError(f"has {len(sample.logprobs)} log-likelihoods for {len(sample.options)} options "
                             f"and answer index {sample.answer_index}")
        values: dict[str, Any] = choice_metrics(sample.logprobs, sample.options, sample.answer_index)
        return {name: values[name] for name in sample.metrics if name in values}
    names = [name for name in SELF_CONTAINED_GENERATE_METRICS if name in sample.metrics]
    if sample.response is not None and sample.references and names:
        return generate_metrics(sample.response, sample.references, names, {})
    return {}


def check_samples(samples: Sequence[Sample], path: Path, remedy: str) -> None:
    """Refuse a repeated sample, or one whose stored answer gives other metrics than it holds."""
    lines: dict[str, int] = {}
    for number, sample in enumerate(samples, 1):
        if sample.key in lines:
            raise HarnessError(f"{path} line {number}: repeats sample {sample.key} of line {lines[sample.key]}; "
                               f"{remedy}")
        lines[sample.key] = number
        try:
            recomputed = recomputed_metrics(sample)
        except ValueError as exc:
            raise HarnessError(f"{path} line {number}: {exc}; {remedy}") from None
        for name, value in recomputed.items():
            if not same(sample.metrics[name], value):
                answer = "log-likelihoods" if sample.logprobs is not None else "response"
                raise HarnessError(f"{path} line {number}: has metric {name!r} {short(sample.metrics[name])}, but "
                                   f"its stored {answer} give {short(value)} (the line was edited or damaged); "
                                   f"{remedy}")


def check_scores(record: RunRecord, samples: Sequence[Sample], run_path: Path, remedy: str) -> None:
    """Refuse a run.json whose sample count, or any score's n or mean, is not what its samples give."""
    stored = record.counts.get("samples")
    if isinstance(stored, int) and stored != len(samples):
        raise HarnessError(f"{run_path}: counts.samples is {stored}, and samples.jsonl holds {len(samples)} "
                           f"samples; {remedy}")
    if record.budget is not None:
        _check_budget(record, samples, run_path, remedy)
    groups: dict[tuple[Any, ...], list[Sample]] = {}
    for sample in samples:
        base = (sample.task, sample.template, sample.template_hash, sample.shots)
        groups.setdefault((*base, None, None), []).append(sample)
        for field, value in (sample.groups or {}).items():
            groups.setdefault((*base, field, value), []).append(sample)
    for index, score in enumerate(record.scores):
        group = (score.group.field, score.group.value) if score.group is not None else (None, None)
        members = groups.get((score.task, score.template, score.template_hash, score.shots, *group), [])
        where = f"{run_path}: scores[{index}] ({score.task}, template {score.template}, {score.shots} shots)"
        if score.n != len(members):
            raise HarnessError(f"{where} has n {score.n}, and samples.jsonl holds {len(members)} of its samples; "
                               f"{remedy}")
        for name, metric in score.metrics.items():
            lacking = [sample.key for sample in members if name not in sample.metrics]
            if lacking:
                raise HarnessError(f"{where} has metric {name!r}, which sample {lacking[0]} lacks; {remedy}")
            values = flatten([sample.metrics[name] for sample in members])
            mean = float(np.mean(np.asarray(values, dtype=np.float64))) if values else float("nan")
            if not same(metric.mean, mean):
                raise HarnessError(f"{where} has {name} mean {short(metric.mean)}, and its {len(members)} samples "
                                   f"in samples.jsonl give {short(mean)} (a file was edited or damaged); {remedy}")


def _check_budget(record: RunRecord, samples: Sequence[Sample], run_path: Path, remedy: str) -> None:
    """A budgeted run's `budget.cells[i].computed` must be its (task, shots)'s number of samples."""
    counts: dict[tuple[str, int], int] = {}
    for sample in samples:
        counts[(sample.task, sample.shots)] = counts.get((sample.task, sample.shots), 0) + 1
    for index, cells in enumerate(record.budget.cells):
        found = counts.get((cells.task, cells.shots), 0)
        if cells.computed != found or not 0 < cells.computed <= cells.cells:
            raise HarnessError(f"{run_path}: budget.cells[{index}] ({cells.task}, {cells.shots} shots) says "
                               f"{cells.computed} of {cells.cells} cells were computed, and samples.jsonl holds "
                               f"{found}; {remedy}")
