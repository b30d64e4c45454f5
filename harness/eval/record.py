"""The run record (run.json) and its samples (samples.jsonl) as typed, versioned dataclasses.

Shaped after inspect_ai's EvalLog / EvalSpec / EvalSample: a `RunRecord` holds what the run computes
(its `RunSpec`, whose hash is the run id), how it went (status, counts, environment, timings) and one
`ScoreEntry` per (task, template, shots) and per `report_by` value; a `Sample` is one scored prompt,
identified by its `SampleId`. Analysis and report read these attributes, never string keys.

This module is the one place that turns them into JSON and back. `to_json` gives exactly the keys and
values the dict-based versions wrote (a field that was absent stays absent, never null), so the files
keep their bytes and the spec keeps its hash; `from_json` reads every version written so far and
refuses a malformed one with a `RecordError` naming the field.

Versions, in run.json's `schema_version` (sample lines carry none; they follow their record):
- 0: no `schema_version` key, written before the record was typed. Fields that such files may lack
  are optional here: a score's `primary_metric`, the spec's `engine`, the record's `environment` and
  `timings`, and a sample's kind-specific fields (some hold only `answer_index`).
- 1: the same fields, plus `schema_version`.
- 2: adds the optional `budget` section of a run made with `harness run --budget`.
- 3: the budget section says `"design": "adaptive"` for a run made with `--budget-design adaptive`
  (absent: balanced, as every version-2 budget is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from harness.eval.json_fields import (
    BOOLEANS,
    INTEGER,
    INTEGERS,
    METRIC_VALUES,
    NUMBER,
    NUMBERS,
    OBJECT,
    OBJECTS,
    TEXT,
    TEXT_OBJECT,
    TEXTS,
    Check,
    Fields,
    RecordError,
)
from harness.seen import SEEN_STATUSES

SCHEMA_VERSION = 3
"""The version this code writes; it reads every version from 0 up to it."""

MetricValue = float | list[float]
"""A sample's value for one metric; a list where the sample holds several judgements (IFEval)."""


def _optional_fields(item: Any, checks: Mapping[str, Check]) -> dict[str, Any]:
    """The optional fields that are set, as JSON: None means absent, so it is never written as null."""
    return {name: value for name in checks if (value := getattr(item, name)) is not None}


class SampleId(NamedTuple):
    """What a sample measures: samples of two runs with equal ids are paired in a comparison."""

    task: str
    template: str
    template_hash: str
    shots: int
    row_id: str

    @property
    def key(self) -> str:
        """The id as one string, as samples.jsonl stores it and the run store indexes finished samples."""
        return f"{self.task}|{self.template}|{self.template_hash}|{self.shots}|{self.row_id}"


_SAMPLE_FIELDS = {"task": TEXT, "cluster": TEXT, "template": TEXT, "template_hash": TEXT, "shots": INTEGER,
                  "row_id": TEXT, "exemplars": TEXTS, "prompt": TEXT, "metrics": METRIC_VALUES}
_SAMPLE_OPTIONAL = {"groups": TEXT_OBJECT, "options": TEXTS, "continuation_prefix": TEXT, "answer_index": INTEGER,
                    "logprobs": NUMBERS, "is_greedy": BOOLEANS, "num_tokens": INTEGERS, "response": TEXT,
                    "references": TEXTS}


@dataclass(frozen=True)
class Sample:
    """One line of samples.jsonl: a prompt, what the model answered, and the answer's metrics.

    `groups` holds the task's `report_by` row fields (absent for tasks without them). The rest is
    the kind's: a choice sample has `options` .. `num_tokens`, a generate sample `response` and
    `references`."""

    task: str
    cluster: str
    template: str
    template_hash: str
    shots: int
    row_id: str
    exemplars: list[str]
    prompt: str
    metrics: dict[str, MetricValue]
    groups: dict[str, str] | None = None
    options: list[str] | None = None
    continuation_prefix: str | None = None
    answer_index: int | None = None
    logprobs: list[float] | None = None
    is_greedy: list[bool] | None = None
    num_tokens: list[int] | None = None
    response: str | None = None
    references: list[str] | None = None

    @property
    def id(self) -> SampleId:
        return SampleId(self.task, self.template, self.template_hash, self.shots, self.row_id)

    @property
    def key(self) -> str:
        return self.id.key

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **{name: getattr(self, name) for name in _SAMPLE_FIELDS},
                **_optional_fields(self, _SAMPLE_OPTIONAL)}

    def line(self) -> str:
        """The sample's line of samples.jsonl, without the newline."""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: Any) -> Sample:
        fields = Fields(raw)
        key = fields.take("key", TEXT)
        sample = cls(**{name: fields.take(name, check) for name, check in _SAMPLE_FIELDS.items()},
                     **{name: fields.maybe(name, check) for name, check in _SAMPLE_OPTIONAL.items()})
        fields.done()
        if key != sample.key:
            raise RecordError(f"has field 'key' {key!r}, which is not its task|template|hash|shots|row "
                              f"({sample.key!r})")
        return sample


@dataclass(frozen=True)
class MetricScore:
    """One metric over a group of samples: the mean of their values and its bootstrap standard error."""

    mean: float
    stderr: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "stderr": self.stderr}

    @classmethod
    def read(cls, fields: Fields) -> MetricScore:
        score = cls(fields.take("mean", NUMBER), fields.take("stderr", NUMBER))
        fields.done()
        return score


@dataclass(frozen=True)
class ScoreGroup:
    """The `report_by` row field and value a score is restricted to (an NIv2 category, say)."""

    field: str
    value: str

    @classmethod
    def read(cls, fields: Fields) -> ScoreGroup:
        group = cls(fields.take("field", TEXT), fields.take("value", TEXT))
        fields.done()
        return group


SEEN_STATUS = Check(lambda v: v in SEEN_STATUSES, "one of " + ", ".join(SEEN_STATUSES))
_SCORE_FIELDS = {"task": TEXT, "cluster": TEXT, "template": TEXT, "template_hash": TEXT, "template_tags": OBJECT,
                 "shots": INTEGER, "n": INTEGER}
_SCORE_OPTIONAL = {"primary_metric": TEXT, "seen_status": SEEN_STATUS}


@dataclass(frozen=True)
class ScoreEntry:
    """Every metric of one (task, template, shots), or of its samples with one `report_by` value (`group`).

    `seen_status` says how the (task, template) relates to the model's training; absent (None) when
    the run has no labels."""

    task: str
    cluster: str
    template: str
    template_hash: str
    template_tags: dict[str, Any]
    shots: int
    n: int
    metrics: dict[str, MetricScore]
    primary_metric: str | None = None
    seen_status: str | None = None
    group: ScoreGroup | None = None

    @property
    def primary(self) -> str:
        """The metric the task is ranked by: its first declared metric.

        run.json is written with sorted keys, so a loaded score's `metrics` are in alphabetical order;
        `primary_metric` keeps the declared first one (records written before it existed fall back to
        the first key)."""
        return self.primary_metric or next(iter(self.metrics))

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _SCORE_FIELDS}
        data["metrics"] = {name: metric.to_json() for name, metric in self.metrics.items()}
        data.update(_optional_fields(self, _SCORE_OPTIONAL))
        if self.group is not None:
            data["group"] = {"field": self.group.field, "value": self.group.value}
        return data

    @classmethod
    def read(cls, fields: Fields) -> ScoreEntry:
        metrics_fields = fields.nested("metrics")
        metrics = {name: MetricScore.read(metrics_fields.nested(name)) for name in metrics_fields.raw}
        if not metrics:
            raise RecordError(f"has field {fields.name('metrics')!r} that names no metric")
        group = fields.maybe_nested("group")
        entry = cls(**{name: fields.take(name, check) for name, check in _SCORE_FIELDS.items()}, metrics=metrics,
                    **{name: fields.maybe(name, check) for name, check in _SCORE_OPTIONAL.items()},
                    group=ScoreGroup.read(group) if group is not None else None)
        fields.done()
        return entry


_SPEC_FIELDS = {"harness_version": TEXT, "model": OBJECT, "config": OBJECT, "tasks": OBJECTS}
_SPEC_OPTIONAL = {"engine": OBJECT, "training_manifest": OBJECT, "declared_seen": OBJECT}


@dataclass(frozen=True)
class RunSpec:
    """What a run computes: equal specs mean equal results, so resuming compares specs and the run id
    is the spec's hash (`harness.eval.spec`).

    The parts stay JSON objects as `to_json` writes them, since their hash must not move: `model` is
    the backend's description, `config` the run's settings, `tasks` each task's file, data and
    templates. `training_manifest` (a tuned checkpoint's) and `declared_seen` (`--seen`) are absent
    from runs without them, so those runs keep the specs and run ids they always had."""

    harness_version: str
    model: dict[str, Any]
    config: dict[str, Any]
    tasks: list[dict[str, Any]]
    engine: dict[str, Any] | None = None
    training_manifest: dict[str, Any] | None = None
    declared_seen: dict[str, Any] | None = None

    @property
    def model_name(self) -> str | None:
        """The model as it was given (a path or a hub id)."""
        name = self.model.get("model")
        return str(name) if name else None

    def to_json(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in _SPEC_FIELDS}, **_optional_fields(self, _SPEC_OPTIONAL)}

    @classmethod
    def from_json(cls, raw: Any) -> RunSpec:
        fields = Fields(raw)
        spec = cls.read(fields)
        fields.done()
        return spec

    @classmethod
    def read(cls, fields: Fields) -> RunSpec:
        """The spec's fields out of `fields` (a spec, or a run record, which holds them at its top level)."""
        return cls(**{name: fields.take(name, check) for name, check in _SPEC_FIELDS.items()},
                   **{name: fields.maybe(name, check) for name, check in _SPEC_OPTIONAL.items()})


_BUDGET_CELLS_FIELDS = {"task": TEXT, "shots": INTEGER, "templates": INTEGER, "rows": INTEGER, "design": INTEGER,
                        "computed": INTEGER}


@dataclass(frozen=True)
class BudgetCells:
    """One (task, shots) of a budgeted run: its `templates` x `rows` cells, the `design` cells its
    budget asked for, and the `computed` ones (the design's plus any an earlier run left)."""

    task: str
    shots: int
    templates: int
    rows: int
    design: int
    computed: int

    @property
    def cells(self) -> int:
        return self.templates * self.rows

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _BUDGET_CELLS_FIELDS}

    @classmethod
    def read(cls, fields: Fields) -> BudgetCells:
        entry = cls(**{name: fields.take(name, check) for name, check in _BUDGET_CELLS_FIELDS.items()})
        fields.done()
        return entry


BUDGET_DESIGNS = ("balanced", "adaptive")
_DESIGN = Check(lambda v: v in BUDGET_DESIGNS, "balanced or adaptive")


@dataclass(frozen=True)
class RunBudget:
    """run.json's `budget`, present only for a run made with `--budget` (`harness.eval.budget_plan`):
    the flag as given, the design's seed, the cells of every (task, shots), and the design: balanced
    (every cell from the seeded order) or adaptive (a balanced half, the rest where the quantiles
    over templates need it). Such a run's scores are means over its computed cells; no number in
    run.json is an estimate."""

    requested: str
    seed: int
    cells: list[BudgetCells]
    design: str = "balanced"

    def to_json(self) -> dict[str, Any]:
        data = {"requested": self.requested, "seed": self.seed, "cells": [c.to_json() for c in self.cells]}
        if self.design != "balanced":  # a balanced budget's section keeps its version-2 bytes
            data["design"] = self.design
        return data

    @classmethod
    def read(cls, fields: Fields) -> RunBudget:
        budget = cls(fields.take("requested", TEXT), fields.take("seed", INTEGER),
                     [BudgetCells.read(item) for item in fields.items("cells")],
                     fields.maybe("design", _DESIGN) or "balanced")
        fields.done()
        return budget


def _maybe_budget(fields: Fields) -> RunBudget | None:
    budget = fields.maybe_nested("budget")
    return RunBudget.read(budget) if budget is not None else None


_RECORD_FIELDS = {"run_id": TEXT, "status": TEXT, "seen_source": TEXT, "counts": OBJECT}
_RECORD_OPTIONAL = {"environment": OBJECT, "timings": OBJECT}


@dataclass(frozen=True)
class RunRecord:
    """run.json: the spec's fields at the top level, then how the run went and its scores.

    `seen_source` says where the scores' `seen_status` labels come from ("manifest", "--seen" or
    "none"); `environment` and `timings` are absent from the oldest records."""

    spec: RunSpec
    run_id: str
    status: str
    seen_source: str
    counts: dict[str, int]
    scores: list[ScoreEntry]
    environment: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    budget: RunBudget | None = None
    schema_version: int = SCHEMA_VERSION

    def ungrouped(self) -> list[ScoreEntry]:
        """The scores per (task, template, shots), without the per-`report_by`-value ones."""
        return [score for score in self.scores if score.group is None]

    @property
    def labelled(self) -> bool:
        """Whether the scores say seen or held out (from a training manifest or `harness run --seen`)."""
        return any(score.seen_status is not None for score in self.scores)

    @property
    def shot_counts(self) -> list[int]:
        """The shot counts the run scored, ascending."""
        return sorted({score.shots for score in self.scores})

    def to_json(self) -> dict[str, Any]:
        """run.json's content; records of version 0 stay without `schema_version`, as their files are."""
        data = {**self.spec.to_json(), **{name: getattr(self, name) for name in _RECORD_FIELDS},
                "scores": [score.to_json() for score in self.scores], **_optional_fields(self, _RECORD_OPTIONAL)}
        if self.budget is not None:
            data["budget"] = self.budget.to_json()
        if self.schema_version:
            data["schema_version"] = self.schema_version
        return data

    @classmethod
    def from_json(cls, raw: Any) -> RunRecord:
        fields = Fields(raw)
        version = fields.maybe("schema_version", INTEGER)
        version = 0 if version is None else version
        if not 0 <= version <= SCHEMA_VERSION:
            raise RecordError(f"has schema_version {version}, and this harness reads versions 0 to "
                              f"{SCHEMA_VERSION}; read it with the harness version that wrote it")
        record = cls(spec=RunSpec.read(fields),
                     **{name: fields.take(name, check) for name, check in _RECORD_FIELDS.items()},
                     scores=[ScoreEntry.read(score) for score in fields.items("scores")],
                     **{name: fields.maybe(name, check) for name, check in _RECORD_OPTIONAL.items()},
                     budget=_maybe_budget(fields), schema_version=version)
        fields.done()
        return record
