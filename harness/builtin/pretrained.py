"""The built-in base model and its FLAN-tuned version, which `harness run` compares by default.

A newcomer with no network should see the harness answer its real question, "did instruction tuning
help on what the model never saw?", on models it can build itself. So the base model is a small
Llama pretrained on `corpus` (plain prose about the suite's world, no instructions), and the tuned
model is that base after `harness tune` on the built-in suite with some clusters and, for every
trained task, some templates held out. Its training manifest lets evaluation label every score
seen / held-out template / held-out task / held-out cluster.

Both are built on first use (a few CPU minutes) and cached under `cache_root()/models`, keyed by a
fingerprint of the recipe, the library versions and, for the tuned model, the suite's task and
template hashes, so a changed recipe or suite never reuses a stale model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import tokenizers
import torch
import transformers

from harness.builtin.corpus import corpus_documents
from harness.builtin.tiny_models import build_cached, cache_root, default_texts, write_random_model
from harness.tasks.registry import Registry
from harness.tune.mixture import MixtureConfig
from harness.tune.run import OutputState, prepare_mixture, train_and_record
from harness.tune.trainer import Progress, TrainConfig, train

BASE_NAME, TUNED_NAME = "tiny-base", "tiny-flan"
RECIPE_VERSION = "1"  # bump when the build changes in a way the recipe fields do not capture


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the two models' weights."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 1024
    corpus_documents: int = 30000
    tokenizer_documents: int = 2000  # corpus documents the tokenizer sees besides `default_texts()`
    pretrain_steps: int = 1000
    pretrain_lr: float = 3e-3
    tune_steps: int = 2000
    tune_lr: float = 2e-3
    batch_size: int = 16
    max_length: int = 1024
    held_out_clusters: tuple[str, ...] = ("list_operations",)
    held_out_templates: int = 2
    fewshot_fraction: float = 0.5
    seed: int = 0


DEFAULT_RECIPE = Recipe()
_TUNING_FIELDS = ("tune_steps", "tune_lr", "held_out_clusters", "held_out_templates", "fewshot_fraction")
Stage = Callable[[str, int], None]  # (what is being trained, total steps), before each training starts


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _versions() -> list[str]:
    return [transformers.__version__, tokenizers.__version__, torch.__version__]


def base_path(recipe: Recipe) -> Path:
    """Keyed by the fields that shape the base alone, so retuning never re-pretrains."""
    fields = {k: v for k, v in asdict(recipe).items() if k not in _TUNING_FIELDS}
    return cache_root() / "models" / f"{BASE_NAME}-{_digest([RECIPE_VERSION, fields, _versions()])}"


def tuned_path(registry: Registry, recipe: Recipe) -> Path:
    suite = sorted((t.name, t.hash, [(tp.id, tp.hash) for tp in t.templates]) for t in registry.select("builtin"))
    key = [base_path(recipe).name, {k: getattr(recipe, k) for k in _TUNING_FIELDS}, suite]
    return cache_root() / "models" / f"{TUNED_NAME}-{_digest(key)}"


def _base_train_config(recipe: Recipe) -> TrainConfig:
    return TrainConfig(steps=recipe.pretrain_steps, batch_size=recipe.batch_size, lr=recipe.pretrain_lr,
                       warmup_steps=recipe.pretrain_steps // 20, weight_decay=0.01, max_length=recipe.max_length,
                       seed=recipe.seed, log_every=10)


def _tune_train_config(recipe: Recipe) -> TrainConfig:
    return TrainConfig(steps=recipe.tune_steps, batch_size=recipe.batch_size, lr=recipe.tune_lr,
                       warmup_steps=recipe.tune_steps // 20, max_length=recipe.max_length, seed=recipe.seed,
                       log_every=10)


def build_base(recipe: Recipe | None = None, stage: Stage | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> Path:
    """The pretrained base model (built and cached on first use); `recipe` defaults to DEFAULT_RECIPE."""
    recipe = recipe or DEFAULT_RECIPE

    def write(folder: Path) -> None:
        documents = corpus_documents(recipe.corpus_documents, seed=recipe.seed)
        initial = folder / "initial"
        initial.mkdir()
        write_random_model(initial, [*default_texts(), *documents[:recipe.tokenizer_documents]], chat=False,
                     seed=recipe.seed, hidden_size=recipe.hidden_size, num_layers=recipe.num_layers,
                     num_heads=recipe.num_heads, vocab_size=recipe.vocab_size, max_position_embeddings=2048)
        if stage:
            stage(f"pretraining {BASE_NAME} on {len(documents)} local documents", recipe.pretrain_steps)
        # An empty prompt puts the loss on every token of the document (BOS is the context).
        train([("", d) for d in documents], initial, _base_train_config(recipe), folder, on_progress=on_progress)
        shutil.rmtree(initial)

    return build_cached(base_path(recipe), write)


def build_tuned(recipe: Recipe | None = None, stage: Stage | None = None,
                on_progress: Callable[[Progress], None] | None = None) -> Path:
    """The base model FLAN-tuned on the built-in suite minus the recipe's held-out clusters and templates."""
    recipe = recipe or DEFAULT_RECIPE
    registry = Registry()
    base = str(build_base(recipe, stage, on_progress))

    def write(folder: Path) -> None:
        config = MixtureConfig(held_out_clusters=recipe.held_out_clusters, held_out_templates=recipe.held_out_templates,
                               fewshot_fraction=recipe.fewshot_fraction, seed=recipe.seed)
        mixture = prepare_mixture(registry, base, config, chat="off")
        if stage:
            stage(f"tuning {TUNED_NAME} on {len(mixture.examples)} examples "
                  f"(held out: {', '.join(mixture.held_out_clusters)})", recipe.tune_steps)
        train_and_record(mixture, base, _tune_train_config(recipe), folder, OutputState(), on_progress=on_progress)

    return build_cached(tuned_path(registry, recipe), write)


def builtin_pair(recipe: Recipe | None = None, stage: Stage | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> dict[str, Path]:
    """{"tiny-base": path, "tiny-flan": path}: the default models of `harness run`."""
    recipe = recipe or DEFAULT_RECIPE
    tuned = build_tuned(recipe, stage, on_progress)
    return {BASE_NAME: build_base(recipe), TUNED_NAME: tuned}
