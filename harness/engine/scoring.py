"""Forward passes that score continuations: the plain layout and the prefix-tree layout.

Both end in the same reduction (`reduce_scores`), so the two differ only in how positions are laid
out for the model, never in how token scores are turned into results. Each batch syncs with the
host once, whatever its size.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from harness.engine.base import ScoreResult
from harness.engine.tree import Tree, TreeBatch, batch_trees, build_tree


def reduce_scores(
    logits: torch.Tensor, logit_rows: torch.Tensor, option_index: torch.Tensor, slot: torch.Tensor,
    targets: torch.Tensor, sizes: Sequence[int],
) -> list[ScoreResult]:
    """Per-option log-likelihood sums and greedy flags from the kept logits.

    Token values are laid out as (option, token) with zero padding and summed along rows:
    deterministic on every device (atomic scatter-adds are not), so resumed runs reproduce bit for
    bit, and options are summed in the same order whichever layout produced the logits.
    """
    logprobs = logits.float().log_softmax(dim=-1)
    token_logprobs = logprobs[logit_rows, targets]
    token_greedy = logprobs.argmax(dim=-1)[logit_rows] == targets
    table = torch.zeros(len(sizes), max(sizes), device=logits.device)
    misses = torch.zeros(len(sizes), max(sizes), device=logits.device)
    table[option_index, slot] = token_logprobs
    misses[option_index, slot] = (~token_greedy).float()
    # One device-to-host copy per batch, not one per request.
    both = torch.stack([table.sum(dim=1), misses.sum(dim=1)]).tolist()
    return [ScoreResult(both[0][r], both[1][r] == 0, sizes[r]) for r in range(len(sizes))]


def _project(
    model: torch.nn.Module, keep: torch.Tensor, accepts_logits_to_keep: bool, cache: Any = None,
    **inputs: torch.Tensor,
) -> torch.Tensor:
    """Logits at the kept positions only, row-major: the LM head is the largest matrix of a small
    model and most positions of a prompt are never scored. `cache`, when given, is extended."""
    cached = {"past_key_values": cache, "use_cache": True} if cache is not None else {"use_cache": False}
    if accepts_logits_to_keep:
        logits = model(**inputs, **cached, logits_to_keep=keep).logits
        return logits.reshape(-1, logits.shape[-1])
    return model(**inputs, **cached).logits[keep]


@torch.inference_mode()
def score_plain(
    model: torch.nn.Module, windows: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
    pad_id: int, device: torch.device, accepts_logits_to_keep: bool,
) -> list[ScoreResult]:
    """One right-padded row per (context, option) window, as lm-eval lays them out.

    Right padding needs no attention mask: causal attention never looks at later positions.
    """
    width = max(len(w) for w in windows)
    input_ids = torch.tensor([list(w) + [pad_id] * (width - len(w)) for w in windows])
    keep = torch.zeros(len(windows), width, dtype=torch.bool)
    logit_rows, option_index, slot, targets = [], [], [], []
    for row, (window, continuation) in enumerate(zip(windows, continuations, strict=True)):
        start = len(window) - len(continuation)
        keep[row, start: len(window)] = True
        logit_rows.extend(range(len(logit_rows), len(logit_rows) + len(continuation)))
        option_index.extend([row] * len(continuation))
        slot.extend(range(len(continuation)))
        targets.extend(continuation)
    keep = keep.to(device)
    logits = _project(model, keep, accepts_logits_to_keep, input_ids=input_ids.to(device))
    return reduce_scores(
        logits, *(torch.tensor(v, device=device) for v in (logit_rows, option_index, slot, targets)),
        [len(k) for k in continuations],
    )


@torch.inference_mode()
def score_trees(
    model: torch.nn.Module, batch: TreeBatch, device: torch.device, dtype: torch.dtype,
    accepts_logits_to_keep: bool,
) -> list[ScoreResult]:
    """One row per question: its chain under causal attention, then its trie over the chain's cache.

    Shared prefixes, when the batch has any, are computed first, once each, and every row's cache
    starts as a copy of its prefix's. The trie pass's mask is additive (0 or the dtype's minimum),
    the form both the eager and SDPA attention implementations of transformers accept for a
    ready-made 4D mask.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    chain_inputs = {"input_ids": batch.chain_ids.to(device)}
    if batch.prefix_ids is not None:
        assert batch.prefix_rows is not None and batch.chain_mask is not None and batch.chain_positions is not None
        # No position of a shared prefix is scored, so no logits: only the cache is wanted.
        _project(model, torch.zeros(batch.prefix_ids.shape, dtype=torch.bool, device=device),
                 accepts_logits_to_keep, cache, input_ids=batch.prefix_ids.to(device))
        cache.batch_select_indices(batch.prefix_rows.to(device))
        chain_inputs.update(attention_mask=batch.chain_mask.to(device), position_ids=batch.chain_positions.to(device))
    # Without shared prefixes, right-padded chains need no mask: causal attention never looks at
    # later positions, and the trie pass below hides the padding's cache entries.
    chain_keep = batch.chain_keep.to(device)
    parts = [_project(model, chain_keep, accepts_logits_to_keep, cache, **chain_inputs)]
    if batch.tail_ids is not None:
        assert batch.tail_visible is not None and batch.tail_positions is not None and batch.tail_keep is not None
        mask = torch.zeros(batch.tail_visible.shape, dtype=dtype, device=device)
        mask.masked_fill_(~batch.tail_visible.to(device), torch.finfo(dtype).min)
        parts.append(_project(model, batch.tail_keep.to(device), accepts_logits_to_keep, cache,
                              input_ids=batch.tail_ids.to(device), position_ids=batch.tail_positions.to(device),
                              attention_mask=mask))
    return reduce_scores(
        torch.cat(parts) if len(parts) > 1 else parts[0], batch.logit_rows.to(device),
        batch.option_index.to(device), batch.slot.to(device), batch.targets.to(device), batch.sizes,
    )


def has_plain_cache(model: torch.nn.Module) -> bool:
    """Whether every layer of the model's KV cache is a plain DynamicLayer: one that keeps every
    position (a sliding-window layer drops old ones), so caches can be extended and merged freely."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _probe_question(vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """A made-up question (windows, options) whose options share a prefix, for the probes below."""
    generator = torch.Generator().manual_seed(0)
    context = torch.randint(0, vocab, (12,), generator=generator).tolist()
    options = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (3, 1, 4)]
    options[2][:2] = options[0][:2]  # a shared option prefix exercises the trie
    return [(context + k)[:-1] for k in options], options


def _probe_difference(
    model: torch.nn.Module, trees: list[Tree], shared: list[int] | None, windows: list[list[int]],
    options: list[list[int]], pad_id: int, device: torch.device, dtype: torch.dtype, accepts_logits_to_keep: bool,
) -> float:
    """Largest log-likelihood difference between `trees` scored as a batch and their windows
    (`windows[k]`, `options[k]`: the k-th option in the trees' order) scored in the plain layout."""
    plain = score_plain(model, windows, options, pad_id, device, accepts_logits_to_keep)
    tree = score_trees(model, batch_trees(trees, pad_id, shared), device, dtype, accepts_logits_to_keep)
    return max(abs(a.logprob - b.logprob) for a, b in zip(plain, tree, strict=True))


def tree_scoring_blocker(
    model: torch.nn.Module, vocab: int, pad_id: int, device: torch.device, dtype: torch.dtype,
    accepts_logits_to_keep: bool,
) -> str | None:
    """Why prefix-tree scoring is unavailable for this model, or None.

    The tree layout needs a model that honours explicit position ids and a ready-made 4D mask over
    a KV cache (eager or SDPA attention); flash-attention kernels take no custom mask. A probe then
    scores one made-up question both ways, so an architecture that silently ignores any of these
    inputs falls back to the plain layout instead of producing wrong numbers.
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in ("eager", "sdpa"):
        return f"attention implementation {implementation!r} takes no custom 4D mask"
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return "the model's forward takes no position_ids"
    if not has_plain_cache(model):
        return "the model's KV cache has sliding-window (or other non-plain) layers"
    windows, options = _probe_question(vocab)
    # The same question beside a shorter one, so padding and the mask's row offsets are exercised.
    trees = [build_tree(windows, options), build_tree([windows[1][:5]], [options[1]])]
    difference = _probe_difference(model, trees, None, [*windows, windows[1][:5]], [*options, options[1]],
                                   pad_id, device, dtype, accepts_logits_to_keep)
    if difference > (1e-3 if dtype == torch.float32 else 0.1):
        return f"the probe's tree scores differ from the plain ones by {difference:.2g}"
    return None


def prefix_sharing_blocker(
    model: torch.nn.Module, vocab: int, pad_id: int, device: torch.device, dtype: torch.dtype,
    accepts_logits_to_keep: bool,
) -> str | None:
    """Why prefixes shared across questions cannot be computed once for this model, or None.

    On top of the tree layout this needs a 2D mask with holes over a cache whose rows were copied
    (`batch_select_indices`) and position ids that continue after the prefix; a probe scores a
    batch of three rows (two distinct prefixes of different lengths, one row without) against the
    plain layout. Call it only where `tree_scoring_blocker` found nothing.
    """
    windows, options = _probe_question(vocab)
    short, middle = windows[1][:5], windows[1][:9]
    trees = [build_tree(windows, options), build_tree([short], [options[1]]), build_tree([middle], [options[1]])]
    difference = _probe_difference(model, trees, [6, 4, 0], [*windows, short, middle], [*options, *[options[1]] * 2],
                                   pad_id, device, dtype, accepts_logits_to_keep)
    if difference > (1e-3 if dtype == torch.float32 else 0.1):
        return f"the probe's shared-prefix scores differ from the plain ones by {difference:.2g}"
    return None
