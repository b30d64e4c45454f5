"""`harness tune`: a mixture from the evaluation tasks, training, and the manifest beside the checkpoint.

The steps, each usable on its own (the CLI prints between them; the library never prints):

1. `prepare_output` checks the output folder: a fresh run needs an empty (or new) folder; with
   `resume` it finds the latest resumable `checkpoint-<step>`, or reports that the folder already
   holds the finished checkpoint of this very tuning.
2. `prepare_mixture` builds the mixture with the base tokenizer's chat template when chat applies
   (auto: when the tokenizer has one), so training prompts are the prompts evaluation renders.
3. `train_and_record` trains and writes `training_manifest.json` beside the final weights, last:
   a folder with a manifest is a finished checkpoint, and evaluation labels its scores by it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.chat import PLAIN, ChatFormat
from harness.engine.weights import WEIGHTS_PATTERNS, files_digest
from harness.errors import HarnessError
from harness.seen import MANIFEST_FILE, TrainingManifest, read_manifest
from harness.tasks.registry import Registry
from harness.tune.manifest import manifest_from_mixture, write_manifest
from harness.tune.mixture import Mixture, MixtureConfig, build_mixture
from harness.tune.trainer import _RESUME_FREE, STATE_DIR, Progress, TrainConfig, TrainSummary, train

log = logging.getLogger(__name__)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class OutputState:
    """What the output folder holds: nothing to continue, a checkpoint to resume, or a finished run."""

    resume_from: Path | None = None
    finished: TrainingManifest | None = None


@dataclass(frozen=True)
class TuneResult:
    manifest: TrainingManifest
    manifest_path: Path
    summary: TrainSummary | None  # None: the folder already held this finished tuning
    resumed_from: Path | None


def latest_checkpoint(out: Path) -> Path | None:
    """The resumable `checkpoint-<step>` with the highest step in `out`, if any."""
    found = []
    for child in out.iterdir() if out.is_dir() else ():
        match = _CHECKPOINT.fullmatch(child.name)
        if match and (child / STATE_DIR / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def prepare_output(out: Path, base: str, resume: bool) -> OutputState:
    """Refuse to overwrite a folder that is not this tuning's; see the module docstring."""
    if Path(base).exists() and out.resolve() == Path(base).resolve():
        raise HarnessError(f"--out {out} is the base model's folder; write the tuned checkpoint elsewhere")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a folder")
    if not resume:
        if out.is_dir() and any(out.iterdir()):
            raise HarnessError(f"--out {out} is not empty; pass --resume to continue the tuning there, "
                               "or choose another folder")
        return OutputState()
    finished = read_manifest(out)
    if finished is not None:
        return OutputState(finished=finished)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        log.warning("--resume: %s holds no checkpoint yet; training from step 0", out)
    return OutputState(resume_from=checkpoint)


def prepare_mixture(registry: Registry, base: str, config: MixtureConfig, chat: str) -> Mixture:
    """The mixture rendered with the base tokenizer's chat template when chat applies (as evaluation
    resolves --chat: `ChatFormat.resolve`)."""
    chat_format = ChatFormat.from_pretrained(base)
    use_chat = chat_format.resolve(chat, "the base model's")
    return build_mixture(registry, replace(config, chat=use_chat), chat_format if use_chat else PLAIN)


def base_weights_hash(base: str) -> str | None:
    """sha256 of a local base model's weight files, as `HFBackend.describe()["weights_sha256"]`
    computes it; None for a hub id (its commit pins it instead)."""
    folder = Path(base)
    return files_digest(folder, WEIGHTS_PATTERNS) if folder.is_dir() else None


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The training settings that change the weights (checkpoint and log intervals do not)."""
    return {k: v for k, v in asdict(config).items() if k not in _RESUME_FREE}


def build_manifest(mixture: Mixture, base: str, config: TrainConfig) -> TrainingManifest:
    return manifest_from_mixture(mixture, base, base_weights_hash(base), hyperparameters=hyperparameters(config),
                                 seeds={"train": config.seed})


def _same_tuning(a: TrainingManifest, b: TrainingManifest) -> bool:
    keys = ("base_weights_hash", "mixture_hash", "hyperparameters", "seeds")
    return all(asdict(a)[k] == asdict(b)[k] for k in keys)


def train_and_record(
    mixture: Mixture, base: str, config: TrainConfig, out: Path, state: OutputState,
    on_progress: Callable[[Progress], None] | None = None,
) -> TuneResult:
    """Train on the mixture (or continue from `state.resume_from`) and write the manifest last."""
    manifest = build_manifest(mixture, base, config)
    if state.finished is not None:
        if not _same_tuning(state.finished, manifest):
            raise HarnessError(f"--resume: {out} holds a finished checkpoint of a different tuning (base weights, "
                               "mixture, hyperparameters or seeds differ); choose another --out")
        log.info("%s already holds this finished tuning; nothing to do", out)
        return TuneResult(state.finished, out / MANIFEST_FILE, None, None)
    pairs = [(e.prompt, e.completion) for e in mixture.examples]

    def checkpoint_manifest(step: int) -> dict[str, str]:
        return {MANIFEST_FILE: json.dumps(asdict(replace(manifest, trained_steps=step)), indent=2)}

    summary = train(pairs, base, config, out, resume_from=state.resume_from, on_progress=on_progress,
                    checkpoint_files=checkpoint_manifest)
    final = replace(manifest, trained_steps=config.steps)
    from accelerate import PartialState

    processes = PartialState()
    if processes.is_main_process:  # the weights are saved by the main process too
        write_manifest(out, final)
    processes.wait_for_everyone()
    return TuneResult(final, out / MANIFEST_FILE, summary, state.resume_from)
