"""What a run computes (its spec) and the run id derived from it; equal specs mean equal results."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import __version__
from harness.engine.base import Backend
from harness.eval.config import RunConfig
from harness.eval.plan import select_templates
from harness.eval.record import RunSpec
from harness.files import short_hash
from harness.seen import DeclaredSeen, TrainingManifest, manifest_summary, read_manifest
from harness.tasks.kinds import get_kind
from harness.tasks.rows import Split
from harness.tasks.schema import Task


def run_spec(config: RunConfig, backend: Backend, tasks: list[Task], splits: dict[str, Split], chat: bool,
             manifest: TrainingManifest | None = None,
             declared: DeclaredSeen | None = None) -> RunSpec:
    """What the run computes; equal specs mean equal results, so resume compares specs.

    A tuned checkpoint's manifest enters the spec (mixture hash, held-out clusters), so a checkpoint
    re-tuned into the same folder never resumes into the old run; untuned models' specs lack the key.
    Tasks declared seen with `--seen` change the record's labels, so they enter the spec too, and
    only when given: runs without them keep the specs (and run ids) they always had.

    The spec is returned as it reads back from spec.json (tuples become lists), so a fresh spec and a
    stored one compare equal."""
    spec: dict[str, Any] = {
        "harness_version": __version__,
        "model": backend.describe(),
        "config": {**asdict(config), "chat_applied": chat},
        "engine": {"batch_tokens": backend.batch_tokens},
        "tasks": [
            {
                "name": t.name, "cluster": t.cluster, "kind": t.kind, "file": str(t.path), "file_sha256": t.hash,
                "data": {"origin": splits[t.name].origin, "eval_split": t.data.eval_split,
                         "fewshot_split": t.data.fewshot_split, "rows": len(splits[t.name])},
                "metrics": list(t.metrics),
                "generation": get_kind(t.kind).generation_spec(t),
                "templates": [
                    {"id": tp.id, "hash": tp.hash, "file": str(tp.path), "tags": asdict(tp.tags)}
                    for tp in select_templates(t, config.templates)
                ],
            }
            for t in tasks
        ],
    }
    if manifest is not None:
        spec["training_manifest"] = manifest_summary(manifest)
    if declared is not None:
        spec["declared_seen"] = {"tasks": sorted(declared.tasks), "clusters": sorted(declared.clusters)}
    return RunSpec.from_json(json.loads(json.dumps(spec)))


def checkpoint_manifest(backend: Backend) -> TrainingManifest | None:
    """The training manifest beside a local model folder, or None (a hub id, an untuned model)."""
    local_path = backend.describe().get("local_path")
    return read_manifest(Path(local_path)) if local_path else None


def seen_source(manifest: TrainingManifest | None, declared: DeclaredSeen | None) -> str:
    """Where a record's seen_status labels come from: "manifest", "--seen", or "none" (no labels)."""
    return "manifest" if manifest is not None else "--seen" if declared is not None else "none"


def default_run_id(spec: RunSpec) -> str:
    """The model's folder name and the spec's hash: the same command always writes to the same folder."""
    model = spec.model_name or ""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"
    return f"{name}-{short_hash(json.dumps(spec.to_json(), sort_keys=True).encode())[:10]}"
