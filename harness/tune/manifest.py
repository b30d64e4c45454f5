"""Writing the training manifest beside a tuned checkpoint (reading it, and its schema, is `harness.seen`).

The file pins everything needed to rebuild the mixture and tell two checkpoints apart: base weights
hash, mixture hash, seeds, hyperparameters, git commit.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.files import PROJECT_ROOT, environment_info, write_json_atomic
from harness.seen import MANIFEST_FILE, TrainingManifest

if TYPE_CHECKING:
    from harness.tune.mixture import Mixture


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value))


def manifest_from_mixture(
    mixture: Mixture, base_model: str, base_weights_hash: str | None,
    hyperparameters: dict[str, Any] | None = None, seeds: dict[str, int] | None = None,
) -> TrainingManifest:
    """A manifest for a checkpoint tuned on `mixture`; the trainer adds its hyperparameters and seeds."""
    return TrainingManifest(
        base_model=base_model,
        base_weights_hash=base_weights_hash,
        mixture_hash=mixture.hash,
        mixture_config=_json_value(asdict(mixture.config)),
        tasks=mixture.tasks,
        held_out_requested=mixture.held_out_requested,
        held_out_clusters=mixture.held_out_clusters,
        seeds={"mixture": mixture.config.seed, **(seeds or {})},
        hyperparameters=_json_value(hyperparameters or {}),
        environment=_json_value(environment_info(PROJECT_ROOT)),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def write_manifest(folder: Path, manifest: TrainingManifest) -> Path:
    """Write `training_manifest.json` into the checkpoint folder atomically; returns its path."""
    path = Path(folder) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, asdict(manifest))
    return path
