"""Seen and held-out: what a checkpoint was tuned on, and the labels every score is split by.

Held-out is relative to a checkpoint. A tuned checkpoint's folder holds `training_manifest.json`
(written by `harness tune`); a model without one may be given `--seen TASKS` instead. Either way a
(task, template) is labelled seen, held-out template, held-out task or held-out cluster. The
vocabulary, reading a manifest and the `--seen` policy live here and only here, so evaluation,
tuning, analysis and report all speak of the same four labels.

Templates are recorded with their hashes, not only their ids, so a template whose wording changed
after training counts as unseen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import __version__
from harness.errors import HarnessError
from harness.tasks.registry import Registry
from harness.tasks.schema import Task

log = logging.getLogger(__name__)

MANIFEST_FILE = "training_manifest.json"
FORMAT_VERSION = 1
SeenStatus = Literal["seen", "held_out_template", "held_out_task", "held_out_cluster"]
SEEN_STATUSES: tuple[SeenStatus, ...] = ("seen", "held_out_template", "held_out_task", "held_out_cluster")
"""The labels, from closest to training to furthest; tables and plots list them in this order."""
STATUS_NAMES: dict[str | None, str] = {
    "seen": "seen", "held_out_template": "held-out template", "held_out_task": "held-out task",
    "held_out_cluster": "held-out cluster", None: "unlabelled",
}
"""How a label is written for a reader."""


def status_order(status: str | None) -> int:
    """A label's position in SEEN_STATUSES (unknown or missing labels last)."""
    return SEEN_STATUSES.index(status) if status in SEEN_STATUSES else len(SEEN_STATUSES)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TemplateRecord:
    """A template that got at least one training example, with its count per shot number."""

    id: str
    hash: str
    options_shown: bool
    turned_around: bool
    examples_by_shots: dict[int, int]

    @property
    def examples(self) -> int:
        return sum(self.examples_by_shots.values())


@dataclass(frozen=True)
class TaskRecord:
    """A trained task: where its rows came from and how its examples spread over templates."""

    name: str
    cluster: str
    task_hash: str
    split: str
    rows: int
    examples: int
    templates: tuple[TemplateRecord, ...]


@dataclass(frozen=True)
class TrainingManifest:
    """Everything a checkpoint's evaluation needs to know about its tuning, as stored in JSON.

    `mixture_config`, `hyperparameters` and `environment` hold JSON values (lists, not tuples), so a
    manifest read back compares equal to the one written.
    """

    base_model: str
    base_weights_hash: str | None
    mixture_hash: str
    mixture_config: dict[str, Any]
    tasks: tuple[TaskRecord, ...]
    held_out_requested: tuple[str, ...]
    held_out_clusters: tuple[str, ...]
    seeds: dict[str, int]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    harness_version: str = __version__
    created: str = ""
    format_version: int = FORMAT_VERSION
    trained_steps: int | None = None  # optimizer steps behind these weights (an intermediate checkpoint's)

    @property
    def examples(self) -> int:
        return sum(t.examples for t in self.tasks)

    def trained_clusters(self) -> set[str]:
        return {t.cluster for t in self.tasks}


def seen_status(manifest: TrainingManifest, task: str, template_id: str, template_hash: str,
                cluster: str) -> SeenStatus:
    """How (task, template) relates to the checkpoint's training: the labels evaluation reports by.

    seen: this task was trained on with this exact template (id and hash); held_out_template: the
    task was trained on, not with this wording; held_out_task: the task was not, its cluster was;
    held_out_cluster: neither.
    """
    for record in manifest.tasks:
        if record.name == task:
            trained = any(t.id == template_id and t.hash == template_hash for t in record.templates)
            return "seen" if trained else "held_out_template"
    return "held_out_task" if cluster in manifest.trained_clusters() else "held_out_cluster"


@dataclass(frozen=True)
class DeclaredSeen:
    """Tasks a user says a model was tuned on (`harness run --seen`), for checkpoints with no manifest.

    Published instruction-tuned models ship no training manifest, yet their papers list the training
    tasks; declaring them lets such a model's scores be split seen / held-out like a tuned one's.
    A declaration names tasks, not wordings, so it never yields held_out_template.
    """

    tasks: frozenset[str]
    clusters: frozenset[str]

    def status(self, task: str, cluster: str) -> SeenStatus:
        if task in self.tasks:
            return "seen"
        return "held_out_task" if cluster in self.clusters else "held_out_cluster"


class _Malformed(ValueError):
    """A field of the manifest has the wrong shape; the message names the field."""


def _get(raw: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if not isinstance(raw, dict):
        raise _Malformed(f"{where or 'the top level'} must be an object")
    if key not in raw:
        raise _Malformed(f"missing field {where}{key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise _Malformed(f"field {where}{key!r} has the wrong type ({type(value).__name__})")
    return value


def _strings(raw: Any, key: str) -> tuple[str, ...]:
    values = _get(raw, key, list)
    if not all(isinstance(v, str) for v in values):
        raise _Malformed(f"field {key!r} must be a list of strings")
    return tuple(values)


def _template(raw: Any, where: str) -> TemplateRecord:
    shots = _get(raw, "examples_by_shots", dict, where)
    try:
        by_shots = {int(k): v for k, v in shots.items()}
    except ValueError:
        raise _Malformed(f"field {where}'examples_by_shots' must map shot numbers to counts") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in by_shots.values()):
        raise _Malformed(f"field {where}'examples_by_shots' must map shot numbers to counts")
    return TemplateRecord(_get(raw, "id", str, where), _get(raw, "hash", str, where),
                          _get(raw, "options_shown", bool, where), _get(raw, "turned_around", bool, where), by_shots)


def _task(raw: Any, index: int) -> TaskRecord:
    where = f"tasks[{index}]."
    templates = _get(raw, "templates", list, where)
    return TaskRecord(
        _get(raw, "name", str, where), _get(raw, "cluster", str, where), _get(raw, "task_hash", str, where),
        _get(raw, "split", str, where), _get(raw, "rows", int, where), _get(raw, "examples", int, where),
        tuple(_template(t, f"{where}templates[{i}].") for i, t in enumerate(templates)),
    )


def _parse(raw: Any) -> TrainingManifest:
    version = _get(raw, "format_version", int)
    if version > FORMAT_VERSION:
        raise _Malformed(f"format_version {version} is newer than this harness reads ({FORMAT_VERSION})")
    seeds = _get(raw, "seeds", dict)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds.values()):
        raise _Malformed("field 'seeds' must map names to integers")
    weights_hash = raw.get("base_weights_hash") if isinstance(raw, dict) else None
    if weights_hash is not None and not isinstance(weights_hash, str):
        raise _Malformed("field 'base_weights_hash' must be a string or null")
    return TrainingManifest(
        base_model=_get(raw, "base_model", str),
        base_weights_hash=weights_hash,
        mixture_hash=_get(raw, "mixture_hash", str),
        mixture_config=_get(raw, "mixture_config", dict),
        tasks=tuple(_task(t, i) for i, t in enumerate(_get(raw, "tasks", list))),
        held_out_requested=_strings(raw, "held_out_requested"),
        held_out_clusters=_strings(raw, "held_out_clusters"),
        seeds=seeds,
        hyperparameters=_get(raw, "hyperparameters", dict),
        environment=_get(raw, "environment", dict),
        harness_version=_get(raw, "harness_version", str),
        created=_get(raw, "created", str),
        format_version=version,
        trained_steps=_optional_int(raw, "trained_steps"),
    )


def _optional_int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise _Malformed(f"field {key!r} must be an integer or null")
    return value


def read_manifest(folder: Path) -> TrainingManifest | None:
    """The manifest beside a checkpoint, or None when the folder has none (an untuned model)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return _parse(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, _Malformed) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"{path}: malformed training manifest ({detail}); "
                           "rewrite it by re-running the tuning or fix the field") from None


def manifest_summary(manifest: TrainingManifest) -> dict[str, Any]:
    """What a run record keeps of the checkpoint's training manifest."""
    return {"mixture_hash": manifest.mixture_hash, "held_out_requested": list(manifest.held_out_requested),
            "held_out_clusters": list(manifest.held_out_clusters), "base_model": manifest.base_model,
            "base_weights_hash": manifest.base_weights_hash}


def declare_seen(registry: Registry, names: str) -> DeclaredSeen:
    """The tasks and clusters named by `--seen` (task and/or cluster names, as `--tasks` takes them)."""
    try:
        tasks = registry.select(names)
    except HarnessError as exc:
        raise HarnessError(f"--seen: {exc}") from None
    return DeclaredSeen(frozenset(t.name for t in tasks), frozenset(t.cluster for t in tasks))


def refuse_seen_with_manifest(model_folder: str | Path | None) -> None:
    """`--seen` and a training manifest would both label the scores; refuse the pair rather than let
    one silently win."""
    if model_folder is not None and (Path(model_folder) / MANIFEST_FILE).is_file():
        raise HarnessError(f"{model_folder}: has a {MANIFEST_FILE}, which already labels seen and held-out "
                           "tasks; drop --seen (it is for models without one)")


def warn_contamination(manifest: TrainingManifest, tasks: list[Task]) -> None:
    """Log every evaluated task that the manifest says was trained on although its cluster was held out."""
    trained = {record.name: record for record in manifest.tasks}
    for task in tasks:
        if task.cluster in manifest.held_out_clusters and task.name in trained:
            log.warning("contamination: task %r is in held-out cluster %r, yet the checkpoint was trained on it "
                        "(%d examples, training manifest cluster %r); its held-out scores are not held out",
                        task.name, task.cluster, trained[task.name].examples, trained[task.name].cluster)
