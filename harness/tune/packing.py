"""Training examples as evaluation tokenises them, and micro-batches packed or padded.

A model is trained on exactly the token ids it is later scored on: the prompt and completion go
through lm-eval's pair rules (`harness.engine.tokenization.encode_pair`), then EOS is appended so
the model learns to stop. Packing puts several examples in one row without letting them see each
other: position ids restart per example and attention is block-diagonal causal, so an example's
loss is the same packed with others or alone (tests check to 1e-5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.engine.tokenization import encode_pair, prefix_token_id
from harness.errors import HarnessError

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One (prompt, completion) pair as model inputs and next-token targets.

    `inputs` are the ids without the final EOS (it is never an input worth computing), `targets[i]`
    is the id that should follow `inputs[:i+1]`, IGNORE on the prompt.
    """

    inputs: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def num_labels(self) -> int:
        return sum(t != IGNORE for t in self.targets)


def encode_example(tokenizer: Any, prompt: str, completion: str, max_length: int, index: int = 0) -> Example:
    """Tokenise one pair as evaluation does, append EOS, mask the prompt, cut to `max_length`.

    Truncation drops the end (the prompt's start, BOS and instruction, must stay as evaluation sees
    it); when that leaves no completion token to learn from, the example is an error, not silence.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise HarnessError("the tokenizer has no EOS token; the trainer appends EOS so the model learns to stop")
    context_ids, completion_ids = encode_pair(tokenizer, prompt, completion, prefix_token_id(tokenizer))
    ids = [*context_ids, *completion_ids, eos][:max_length + 1]
    labels = ([IGNORE] * len(context_ids) + [*completion_ids, eos])[:max_length + 1]
    example = Example(tuple(ids[:-1]), tuple(labels[1:]))
    if example.num_labels == 0:
        raise HarnessError(
            f"training example {index}: every label is masked (prompt {len(context_ids)} tokens, completion "
            f"{len(completion_ids)} + EOS, max_length {max_length}); shorten the prompt or raise max_length"
        )
    return example


def encode_examples(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> list[Example]:
    return [encode_example(tokenizer, p, c, max_length, i) for i, (p, c) in enumerate(pairs)]


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 of the token ids, so a resumed run can refuse data that differs from the first run's."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(repr((example.inputs, example.targets)).encode())
    return digest.hexdigest()


@dataclass
class MicroBatch:
    """Tensors of one forward pass. `segments` numbers the examples of a row (0, 1, ...; padding -1)
    and `example_ids` maps each token to its index in the micro-batch's example list (-1: padding)."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    example_ids: torch.Tensor

    @property
    def num_labels(self) -> int:
        return int((self.targets != IGNORE).sum())

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens: what tokens/s counts, so packed and padded compare fairly."""
        return int((self.segments >= 0).sum())

    def to(self, device: torch.device) -> MicroBatch:
        return MicroBatch(*(t.to(device) for t in (self.input_ids, self.targets, self.position_ids,
                                                   self.segments, self.example_ids)))


def _rows(lengths: Sequence[int], capacity: int, packed: bool) -> list[list[int]]:
    """Example indices per row: first-fit decreasing when packed (few pad tokens), one each otherwise."""
    if not packed:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def collate(examples: Sequence[Example], capacity: int, packed: bool, pad_id: int) -> MicroBatch:
    """One micro-batch: rows of at most `capacity` tokens, padded on the right to the longest row."""
    rows = _rows([len(e.inputs) for e in examples], capacity, packed)
    width = max(sum(len(examples[i].inputs) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, IGNORE, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    example_ids = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for segment, i in enumerate(row):
            n = len(examples[i].inputs)
            span = slice(start, start + n)
            input_ids[r, span] = torch.tensor(examples[i].inputs)
            targets[r, span] = torch.tensor(examples[i].targets)
            position_ids[r, span] = torch.arange(n)
            segments[r, span] = segment
            example_ids[r, span] = i
            start += n
        position_ids[r, start:] = torch.arange(width - start)  # padding: its own causal block
    return MicroBatch(input_ids, targets, position_ids, segments, example_ids)


def attention_mask(segments: torch.Tensor, kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, 1, L, L) block-diagonal causal mask: a token sees earlier tokens of its own example.

    transformers passes a 4D mask through untouched. sdpa takes it as bool (True: attend), which
    also works under bf16 autocast; eager adds it to the scores, so it is additive there. Padding
    forms one block of its own, so no query row is fully masked (that would give NaN in sdpa).
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    allowed = allowed[:, None]
    if kind == "bool":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def attention_kind(model: Any) -> str:
    """The attention implementation of a (possibly peft-wrapped) model: eager, sdpa, flash_..."""
    return str(getattr(model.config, "_attn_implementation", "eager") or "eager")


def model_inputs(implementation: str, batch: MicroBatch) -> dict[str, torch.Tensor]:
    """Forward kwargs that keep the examples of a row apart for the model's attention kind.

    flash-attention ignores 4D masks but reads packing from position ids restarting at 0 (with no
    2D mask), so it gets position ids only; every other kind gets the explicit 4D mask.
    """
    inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
    if "flash" not in implementation:
        kind = "bool" if implementation == "sdpa" else "additive"
        inputs["attention_mask"] = attention_mask(batch.segments, kind)
    return inputs


def token_losses(model: Any, batch: MicroBatch, implementation: str | None = None) -> torch.Tensor:
    """Per-token cross-entropy (batch, L) in float32, 0 where the target is ignored.

    `implementation` is read from `model.config` unless given (a DDP wrapper has no config).
    """
    kind = implementation or attention_kind(model)
    logits = model(**model_inputs(kind, batch), use_cache=False).logits
    flat = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return flat.view(batch.targets.shape)


def _derived_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


class DataOrder:
    """The example stream: epoch e is a permutation seeded by (seed, e), so step s's examples depend
    on nothing but seed and s (a resumed run sees what the uninterrupted one saw)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._perm: tuple[int, list[int]] = (-1, [])

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for k in range(start, start + count):
            epoch = k // self.n
            if self._perm[0] != epoch:
                generator = torch.Generator().manual_seed(_derived_seed(self.seed, epoch))
                self._perm = (epoch, torch.randperm(self.n, generator=generator).tolist())
            out.append(self._perm[1][k % self.n])
        return out

    def step(self, examples: Sequence[Example], step: int, per_step: int, batch_size: int, capacity: int,
             packed: bool, pad_id: int) -> list[MicroBatch]:
        """All micro-batches of optimiser step `step` (every process's), `batch_size` examples each."""
        chosen = self.take(step * per_step, per_step)
        return [collate([examples[i] for i in chosen[j:j + batch_size]], capacity, packed, pad_id)
                for j in range(0, per_step, batch_size)]
