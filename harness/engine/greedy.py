"""Batched greedy decoding over a KV cache, with finished rows leaving the batch.

`model.generate` keeps every row of a batch running until the last one stops, checks stop strings
with a criterion that re-examines the tail of every row each step, and runs a stack of generic
logits processors. For greedy evaluation none of that is needed. This loop prefills the prompts
(in groups of similar length, so short prompts are not padded to the longest, merged into one
cache), computing logits at the last position only; then it feeds one token per row per step,
drops a row from the cache the moment it emits EOS, reaches a stop string or its token limit (and
hands that row out at once, so it can be saved while the others decode), and syncs with the host
once per step (the argmax). Every token sees the same positions and the same
visible tokens as under `model.generate`; only padding differs, which moves logits by float
rounding, and tests check the strings are identical.

Stop strings are found the way lm-eval finds them: in the generated text only. (transformers'
`StopStringCriteria` also matches a stop string that begins in the prompt, e.g. a prompt ending in
"\\n" with stop "\\n\\n" stops at the first generated "\\n"; lm-eval does not, and the harness
follows lm-eval.) Only the decoded tail of the newest tokens is searched each step; a hit there is
confirmed on the row's whole decoded text before the row stops, so a row never stops early. A stop
missed in the tail window costs compute, never correctness: the final text is cut at the first
stop string either way.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

# Generation-config fields under which `model.generate` would not be plain greedy decoding (with
# the values at which it is). A model whose config sets any of them differently is decoded by
# `model.generate`, as lm-eval decodes it.
_GREEDY_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "num_beams": (None, 1),
    "penalty_alpha": (None,),
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "watermarking_config": (None,),
    "prompt_lookup_num_tokens": (None,),
    "assistant_model": (None,),
}


def greedy_loop_blocker(model: torch.nn.Module, eos_id: int | None) -> str | None:
    """Why this loop would not reproduce `model.generate` for `model`, or None when it would."""
    if eos_id is None:
        return "the tokenizer has no EOS token"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return "the model's forward takes no logits_to_keep"
    config = getattr(model, "generation_config", None)
    for field, defaults in _GREEDY_DEFAULTS.items():
        value = getattr(config, field, None)
        if value not in defaults:
            return f"generation_config.{field}={value!r}"
    return None


class StopChecker:
    """Finds each row's stop strings in its generated text by decoding only its newest tokens.

    Rows of one batch may come from different tasks, so each has its own stop strings.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[Sequence[str]]) -> None:
        self.tokenizer = tokenizer
        self.stops = [tuple(s for s in row if s) for row in stops]
        # A stop of n characters spans at most n tokens that each decode to at least one
        # character; the margin covers a token split inside a multi-byte character.
        self.windows = [max((len(s) for s in row), default=0) + 2 for row in self.stops]

    def hits(self, rows: Sequence[int], sequences: Sequence[list[int]]) -> list[bool]:
        """For each row (an index into the stops) and its generated tokens, whether the text
        contains one of the row's stop strings."""
        found = [False] * len(rows)
        checked = [k for k, row in enumerate(rows) if self.stops[row]]
        if not checked:
            return found
        tails = self.tokenizer.batch_decode([sequences[k][-self.windows[rows[k]]:] for k in checked],
                                            skip_special_tokens=True)
        for k, tail in zip(checked, tails, strict=True):
            stops = self.stops[rows[k]]
            hit = any(stop in tail for stop in stops)
            if hit and len(sequences[k]) > self.windows[rows[k]]:  # confirm on the whole text: never stop early
                text = self.tokenizer.decode(sequences[k], skip_special_tokens=True)
                hit = any(stop in text for stop in stops)
            found[k] = hit
        return found


def _forward(model: torch.nn.Module, cache: Any, **inputs: torch.Tensor) -> torch.Tensor:
    """Next-token logits of the last position of every row, extending `cache` in place."""
    return model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


def _left_padded(contexts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(c) for c in contexts)
    input_ids = torch.tensor([[pad_id] * (width - len(c)) + list(c) for c in contexts], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
    # Positions as `model.generate` makes them: counted over real tokens; padding gets 0 (masked).
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return input_ids, mask, positions


def _prefill(
    model: torch.nn.Module, contexts: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], pad_id: int,
    room: int,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run the prompts, group by group, into one left-padded cache for the whole batch, with `room`
    positions reserved per row for the tokens to come.

    Prompts of one decoding batch can range from 20 to 600 tokens; prefilled together they are all
    padded to 600. Prefilled in groups of similar length (`groups`, planned by the caller) and then
    merged (each group's cache padded on the left, where the mask hides it), the batch still decodes
    as one, one call per step. Returns the cache, the last position's logits and the 2D mask, rows
    in the order of `groups` flattened. A model whose cache is not plain full attention (sliding
    windows etc.) keeps transformers' own cache, in one group.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    from harness.engine.reserved_cache import ReservedLayer

    device = model.device
    parts = []
    for group in groups:
        input_ids, mask, positions = _left_padded([contexts[i] for i in group], pad_id, device)
        cache = DynamicCache(config=model.config)
        logits = _forward(model, cache, input_ids=input_ids, attention_mask=mask, position_ids=positions)
        parts.append((cache, logits, mask))
    plain = all(type(layer) is DynamicLayer for cache, _, _ in parts for layer in cache.layers)
    if not plain:
        if len(parts) > 1:  # the caller plans one group for such models
            raise ValueError("grouped prefill needs plain DynamicLayer caches")
        return parts[0]
    width = max(mask.shape[1] for _, _, mask in parts)
    layers = []
    for layer in range(len(parts[0][0].layers)):
        keys, values = [], []
        for cache, _, mask in parts:
            shift = (0, 0, width - mask.shape[1], 0)  # pad the sequence dimension on the left
            keys.append(torch.nn.functional.pad(cache.layers[layer].keys, shift))
            values.append(torch.nn.functional.pad(cache.layers[layer].values, shift))
        layers.append(ReservedLayer(torch.cat(keys), torch.cat(values), room))
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, _, m in parts])
    return Cache(layers=layers), torch.cat([logits for _, logits, _ in parts]), mask


def greedy_decode(
    model: torch.nn.Module, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], *, pad_id: int,
    eos_id: int, stopper: StopChecker, prefill_groups: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """Greedy continuation tokens (EOS excluded) of each context: `greedy_rows` collected in row order."""
    generated: list[list[int]] = [[] for _ in contexts]
    for finished in greedy_rows(model, contexts, max_new_tokens, pad_id=pad_id, eos_id=eos_id, stopper=stopper,
                                prefill_groups=prefill_groups):
        for row, tokens in finished:
            generated[row] = tokens
    return generated


@torch.inference_mode()
def greedy_rows(
    model: torch.nn.Module, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], *, pad_id: int,
    eos_id: int, stopper: StopChecker, prefill_groups: Sequence[Sequence[int]] | None = None,
) -> Iterator[list[tuple[int, list[int]]]]:
    """Greedy continuation tokens (EOS excluded) of each context, decoded as one left-padded batch and
    yielded as `(row, tokens)` in the step each row finishes (the rows that finish together in one list).

    Row i stops at EOS, at one of `stopper`'s stops for row i, or after `max_new_tokens[i]` tokens,
    so requests of different tasks share the batch's decode steps. A row is handed out the step it
    leaves the batch, not when the batch's longest row ends, so the caller can make it durable while
    the rest decode (a 1,280-token IFEval row would otherwise hold back every short answer decoded
    beside it). `prefill_groups` partitions range(len(contexts)) into groups prefilled separately
    (see `_prefill`); by default all prompts are prefilled together, as `model.generate` does.
    """
    if not contexts:
        return
    device = model.device
    groups = prefill_groups or [list(range(len(contexts)))]
    steps = max(max_new_tokens, default=0)
    active = [i for group in groups for i in group]  # the request row of each batch slot
    generated: list[list[int]] = [[] for _ in contexts]
    if steps < 1:
        yield [(row, []) for row in active]
        return
    cache, logits, mask = _prefill(model, contexts, groups, pad_id, room=max(steps - 1, 0))
    next_position = torch.tensor([[len(contexts[i])] for i in active], device=device)
    for _ in range(steps):
        chosen = logits.argmax(dim=-1)
        tokens = chosen.tolist()  # the step's one host sync
        running = []
        for slot, row in enumerate(active):
            if tokens[slot] == eos_id:
                continue
            generated[row].append(tokens[slot])
            if len(generated[row]) < max_new_tokens[row]:
                running.append(slot)
        hits = stopper.hits([active[s] for s in running], [generated[active[s]] for s in running])
        running = [s for s, hit in zip(running, hits, strict=True) if not hit]
        if len(running) < len(active):
            kept = set(running)
            yield [(row, generated[row]) for slot, row in enumerate(active) if slot not in kept]
        if not running:
            return
        if len(running) < len(active):
            # Finished rows leave the batch, so they stop costing compute and cache memory.
            keep = torch.tensor(running, device=device)
            cache.batch_select_indices(keep)
            mask, next_position, chosen = mask[keep], next_position[keep], chosen[keep]
            active = [active[s] for s in running]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        logits = _forward(model, cache, input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position)
        next_position = next_position + 1
