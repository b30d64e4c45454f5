"""FLAN-style instruction tuning of a causal LM on (prompt, completion) pairs.

The pairs are rendered by the evaluation code, and `harness.tune.packing` tokenises them with the
evaluation's own pair rules, so the model is trained on exactly the ids it is later scored on.
Everything that decides the result is a pure function of the config and the data: the example
order of step s comes from (seed, s) alone, and a checkpoint holds optimizer, scheduler and RNG
states, so a resumed run ends with the same weights as an uninterrupted one (on CPU; tests check).

Multi-GPU goes through accelerate (each process takes every P-th micro-batch of a step). Data
parallelism is tested with two CPU processes (gloo), which end with the weights of one process
accumulating the same micro-batches; FSDP has never been run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.tune.packing import (
    DataOrder,
    attention_kind,
    encode_examples,
    examples_digest,
    token_losses,
)

log = logging.getLogger(__name__)
STATE_DIR = "trainer_state"
# Settings that may change between a run and its resumption without changing the result.
_RESUME_FREE = ("save_every", "log_every")


@dataclass
class TrainConfig:
    """How to train. `batch_size` counts examples per micro-batch (per process); a step sees
    batch_size x grad_accum x processes examples, and its loss is the mean over all their labels."""

    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant (both after linear warmup)
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    max_length: int = 1024  # tokens per example, and per packed row
    packing: str = "packed"  # packed | padded
    seed: int = 0
    bf16: bool = False  # autocast on GPU; master weights stay float32
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None  # {r, alpha, dropout, target_modules}
    lora_save: str = "adapter"  # adapter | merged
    save_every: int = 0  # steps between resumable checkpoints; 0: none
    log_every: int = 10

    def validate(self) -> None:
        checks = [
            (self.steps >= 1 and self.batch_size >= 1 and self.grad_accum >= 1, "steps, batch_size, grad_accum >= 1"),
            (self.schedule in ("cosine", "constant"), f"schedule must be cosine or constant, not {self.schedule!r}"),
            (self.packing in ("packed", "padded"), f"packing must be packed or padded, not {self.packing!r}"),
            (self.lora_save in ("adapter", "merged"), f"lora_save must be adapter or merged, not {self.lora_save!r}"),
            (self.max_length >= 2, "max_length must be at least 2"),
            (self.lora is None or "r" in self.lora, "lora needs at least r (and alpha, dropout, target_modules)"),
        ]
        for ok, message in checks:
            if not ok:
                raise HarnessError(f"training config: {message}")


@dataclass(frozen=True)
class Progress:
    """What the progress callback gets after a logged step (the CLI draws it)."""

    step: int
    steps: int
    loss: float
    lr: float
    tokens_seen: int
    tokens_per_s: float


@dataclass
class TrainSummary:
    steps: int
    final_loss: float
    tokens_seen: int
    tokens_per_s: float
    seconds: float
    output_dir: str
    checkpoints: list[str] = field(default_factory=list)


def _load_model(base_model: str, config: TrainConfig, resume_from: Path | None) -> Any:
    from transformers import AutoModelForCausalLM

    source = resume_from if resume_from is not None and config.lora is None else base_model
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise HarnessError(f"{source}: cannot load a causal LM to train ({str(exc).splitlines()[0]})") from None
    if config.gradient_checkpointing:
        # transformers 5 renamed gradient checkpointing to activation checkpointing; older versions lack it.
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora is None:
        return model
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise HarnessError("LoRA training needs peft: pip install 'peft>=0.12'") from None
    if resume_from is not None:
        return PeftModel.from_pretrained(model, str(resume_from / STATE_DIR / "adapter"), is_trainable=True)
    lora = config.lora
    return get_peft_model(model, LoraConfig(
        r=int(lora["r"]), lora_alpha=lora.get("alpha", 2 * int(lora["r"])), lora_dropout=lora.get("dropout", 0.0),
        target_modules=lora.get("target_modules"), task_type="CAUSAL_LM"))


def _optimizer(model: Any, config: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW without decay on biases and norms (1-d tensors), and a warmup + cosine/constant schedule."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    name = "cosine" if config.schedule == "cosine" else "constant_with_warmup"
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=config.steps)
    return optimizer, scheduler


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(folder: Path, model: Any, tokenizer: Any, meta: dict[str, Any], merged: bool,
          state: dict[str, Any] | None, extra_files: dict[str, str] | None = None) -> None:
    """Write a loadable model folder (and, for a checkpoint, the resume state and `extra_files`)
    atomically: into a temporary sibling renamed into place, so a crash never leaves a half checkpoint."""
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    is_peft = hasattr(model, "peft_config")
    if is_peft and merged:
        # merge_and_unload mutates; a checkpoint mid-run merges a copy so training goes on unmerged.
        (copy.deepcopy(model) if state is not None else model).merge_and_unload().save_pretrained(tmp)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "train_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    if state is not None:
        (tmp / STATE_DIR).mkdir()
        if is_peft:
            model.save_pretrained(tmp / STATE_DIR / "adapter")
        torch.save(state["optimizer"], tmp / STATE_DIR / "optimizer.pt")
        torch.save(state["scheduler"], tmp / STATE_DIR / "scheduler.pt")
        torch.save(state["rng"], tmp / STATE_DIR / "rng.pt")
        (tmp / STATE_DIR / "state.json").write_text(json.dumps(state["progress"], indent=2))
    if not folder.exists():
        os.replace(tmp, folder)
        return
    # The final model goes beside the run's checkpoints in `output_dir`: replace entry by entry.
    for item in sorted(tmp.iterdir()):
        target = folder / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


def _resume_state(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The saved step and states, after checking the checkpoint belongs to this very run."""
    state_dir = folder / STATE_DIR
    if not (state_dir / "state.json").is_file():
        raise HarnessError(f"{folder}: not a resumable checkpoint (no {STATE_DIR}/state.json)")
    saved = json.loads((folder / "train_config.json").read_text())
    ours = {k: v for k, v in meta["config"].items() if k not in _RESUME_FREE}
    theirs = {k: v for k, v in saved["config"].items() if k not in _RESUME_FREE}
    if ours != theirs or saved["examples_sha256"] != meta["examples_sha256"]:
        differing = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        what = ", ".join(differing) if differing else "the training examples"
        raise HarnessError(f"{folder}: cannot resume, {what} differ from the checkpoint's run")
    load = {"weights_only": False}  # our own files; the RNG state holds numpy objects
    return {"progress": json.loads((state_dir / "state.json").read_text()),
            "optimizer": torch.load(state_dir / "optimizer.pt", **load),
            "scheduler": torch.load(state_dir / "scheduler.pt", **load),
            "rng": torch.load(state_dir / "rng.pt", **load)}


def train(
    pairs: Sequence[tuple[str, str]],
    base_model: str | Path,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    checkpoint_files: Callable[[int], dict[str, str]] | None = None,
) -> TrainSummary:
    """Fine-tune `base_model` on `pairs`, save the result to `output_dir`, return a summary.

    Checkpoints (every `save_every` steps) go to `output_dir/checkpoint-<step>`; pass one as
    `resume_from` with the same pairs and config to continue where it stopped. `checkpoint_files(step)`
    gives files (name -> text) written into each checkpoint, such as its training manifest, so an
    intermediate checkpoint evaluates with the same seen/held-out labels as the final one.
    """
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    config.validate()
    cuda = torch.cuda.is_available()
    if config.bf16 and not cuda:
        raise HarnessError("training config: bf16 needs a CUDA GPU; set bf16 to false on CPU")
    if not cuda:
        torch.set_flush_denormal(True)  # denormals make CPU matmuls many times slower
    out = Path(output_dir)
    resume = Path(resume_from) if resume_from is not None else None
    # Autocast is ours, not accelerate's mixed_precision: accelerate keeps that setting in a
    # process-wide singleton that refuses a second run with a different value.
    accelerator = Accelerator(cpu=not cuda)

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()

    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    examples = encode_examples(tokenizer, pairs, config.max_length)
    if not examples:
        raise HarnessError("no training examples")
    meta = {"config": asdict(config), "base_model": str(base_model), "examples": len(examples),
            "examples_sha256": examples_digest(examples)}
    state = _resume_state(resume, meta) if resume is not None else None

    torch.manual_seed(config.seed)  # LoRA's initialisation draws from it
    random.seed(config.seed)
    model = _load_model(str(base_model), config, resume).to(accelerator.device)
    model.train()
    optimizer, scheduler = _optimizer(model, config)
    start, tokens_seen = 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, tokens_seen = state["progress"]["step"], state["progress"]["tokens_seen"]
    kind = attention_kind(model)
    model, optimizer = accelerator.prepare(model, optimizer)

    processes, rank = accelerator.num_processes, accelerator.process_index
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = DataOrder(len(examples), config.seed)
    checkpoints: list[str] = []
    loss_value, run_tokens, started, saving = math.nan, 0, time.perf_counter(), 0.0
    for step in range(start, config.steps):
        batches = order.step(examples, step, config.batch_size * config.grad_accum * processes, config.batch_size,
                             config.max_length, config.packing == "packed", pad_id)
        total_labels = sum(b.num_labels for b in batches)
        step_tokens = sum(b.num_tokens for b in batches)
        mine = batches[rank::processes]
        loss_sum = torch.zeros((), device=accelerator.device)
        for j, batch in enumerate(mine):
            # DDP averages gradients over processes; scaling by P makes the sum a mean over all labels.
            last = j == len(mine) - 1
            with accelerator.no_sync(model) if not last else contextlib.nullcontext(), autocast():
                losses = token_losses(model, batch.to(accelerator.device), kind).sum()
                accelerator.backward(losses * (processes / total_labels))
            loss_sum += losses.detach()
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(accelerator.reduce(loss_sum, "sum")) / total_labels
        tokens_seen += step_tokens
        run_tokens += step_tokens
        done = step + 1
        # Checkpoint first: a callback that stops the run (Ctrl-C in the CLI) never loses a due save.
        if config.save_every and done % config.save_every == 0 and done < config.steps:
            save_started = time.perf_counter()
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                folder = out / f"checkpoint-{done}"
                _save(folder, accelerator.unwrap_model(model), tokenizer, meta, config.lora_save == "merged", {
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                    "progress": {"step": done, "tokens_seen": tokens_seen, "loss": loss_value}},
                    checkpoint_files(done) if checkpoint_files is not None else None)
                checkpoints.append(str(folder))
            saving += time.perf_counter() - save_started  # tokens/s measures training, not disk writes
        if done % max(config.log_every, 1) == 0 or done == config.steps:
            speed = run_tokens / max(time.perf_counter() - started - saving, 1e-9)
            log.info("step %d/%d loss %.4f lr %.3g %.0f tokens/s", done, config.steps, loss_value,
                     scheduler.get_last_lr()[0], speed)
            if on_progress is not None:
                on_progress(Progress(done, config.steps, loss_value, scheduler.get_last_lr()[0], tokens_seen, speed))
    seconds = time.perf_counter() - started - saving
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save(out, accelerator.unwrap_model(model), tokenizer, meta, config.lora_save == "merged", None)
    accelerator.free_memory()
    return TrainSummary(steps=config.steps, final_loss=loss_value, tokens_seen=tokens_seen,
                        tokens_per_s=run_tokens / max(seconds, 1e-9), seconds=seconds, output_dir=str(out),
                        checkpoints=checkpoints)
