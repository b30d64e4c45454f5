"""The transformers backend: continuation log-likelihoods and greedy generation.

Tokenisation follows lm-eval's hf backend exactly, because a score is only comparable when the
model saw the same token ids: trailing context whitespace moves onto the continuation, the pair is
encoded whole and split at the context's length, the tokenizer's own special-token rule applies
unless the text already starts with BOS, and an empty context is replaced by the BOS (else EOS) id.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.chat import ChatFormat
from harness.engine import tokenization
from harness.engine.backoff import stream_with_oom_backoff, with_oom_backoff
from harness.engine.base import ChoiceRequest, GenerateRequest, ScoreResult
from harness.engine.batching import CALL_COST, DECODE_CACHE_FACTOR, shared_prefix_batches, token_budget_batches
from harness.engine.greedy import StopChecker, greedy_loop_blocker, greedy_rows
from harness.engine.hf_model import attention_pair_cost, load_model
from harness.engine.overflow import check_on_overflow, handle_overflow
from harness.engine.scoring import (
    has_plain_cache,
    prefix_sharing_blocker,
    score_plain,
    score_trees,
    tree_scoring_blocker,
)
from harness.engine.tree import Tree, batch_trees, build_tree, shared_prefix_groups
from harness.errors import HarnessError

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048


@dataclass
class _ScorePlan:
    """Everything a scoring batch needs, computed once per `score` call from the whole request list.

    A request is scored as a prefix tree (`trees[i]`) unless its windows were truncated to the
    model's length or the fast path is off; then it runs in the plain layout (`trees[i]` is None).
    `shared[i]` is how many leading tokens of tree i come from a prefix its batch computes once for
    every tree that starts with them (0: none), as the batches were planned. `cut` holds the requests
    whose windows were cut (see `handle_overflow`).
    """

    windows: list[list[list[int]]]
    continuations: list[list[list[int]]]
    trees: list[Tree | None]
    shared: list[int]
    cut: dict[int, tuple[str, int]]


class HFBackend:
    """A causal LM and its tokenizer, loaded from a local folder, a hub id or a GGUF file, on one
    device or placed over several by accelerate (`loading`: the other flags `hf_model.load_model` takes).

    `fast=True` (the default) scores the options of a question as one prefix tree and generates with
    the harness's own greedy loop; `fast=False` keeps the plain layout (one row per option, as
    lm-eval) and `model.generate`. Both give the same results up to float rounding (tests check).
    With `share_prefixes=True` (the default; effective with `fast`), questions that begin with the
    same tokens (a template's instruction, a few-shot preamble) have those computed once per batch.
    `static_cache=True` generates through `model.generate` with transformers' static KV cache, which
    it compiles with torch.compile on CUDA: one compilation per batch shape, repaid by long
    generations (IFEval's 1,280 tokens), not by a few tokens per row; on a CPU nothing is compiled.
    A prompt longer than `max_length` is cut from the left as lm-eval cuts it, counted in `truncated`
    and warned about once per call, or refused with `on_overflow="error"`.
    `batch_invariant=True` runs every request in forward passes of its own (no batching, no prefix
    shared across questions): kernels reduce in an order that depends on a batch's padded width, so
    a request's last float bits depend on its batch; alone, they depend on the request only, and a
    run whose requests were split differently (a budgeted run extended to full, data-parallel
    shares) computes the same numbers bit for bit, at the cost of batching.
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        batch_tokens: int = 4096,
        max_length: int | None = None,
        fast: bool = True,
        share_prefixes: bool = True,
        static_cache: bool = False,
        on_overflow: str = "truncate",
        batch_invariant: bool = False,
        **loading: Any,
    ) -> None:
        self.on_overflow = check_on_overflow(on_overflow)
        self.truncated = 0
        self._loaded = load_model(model, dtype=dtype, device=device, **loading)
        self.model_id, self.tokenizer, self.model = self._loaded.model_id, self._loaded.tokenizer, self._loaded.model
        self.device = self._loaded.device
        if self.device.type == "cpu":
            # Denormal floats make CPU matmuls many times slower; flushing them changes nothing measurable.
            torch.set_flush_denormal(True)
        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.vocab_width = self.model.get_output_embeddings().weight.shape[0]
        self.dtype = self._loaded.dtype
        self.batch_tokens = batch_tokens
        config_length = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = max_length or config_length or DEFAULT_MAX_LENGTH
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat_format = ChatFormat.from_tokenizer(self.tokenizer)
        bos = self.tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else self.tokenizer.eos_token_id
        self.fast = fast
        self._call_cost = CALL_COST.get(self.device.type, CALL_COST["cuda"])
        self._pair_cost = attention_pair_cost(self.model)
        self._tree_blocker = (
            tree_scoring_blocker(self.model, min(self.vocab_width, len(self.tokenizer)), self.tokenizer.pad_token_id,
                                 self.device, self.dtype, self._accepts_logits_to_keep)
            if fast else "fast=False"
        )
        if fast and self._tree_blocker:
            log.warning("scoring in the plain layout: %s", self._tree_blocker)
        self.batch_invariant = batch_invariant
        self._share_blocker = (self._tree_blocker or ("share_prefixes=False" if not share_prefixes else None)
                               or ("batch_invariant=True" if batch_invariant else None))
        if self._share_blocker is None:
            self._share_blocker = prefix_sharing_blocker(
                self.model, min(self.vocab_width, len(self.tokenizer)), self.tokenizer.pad_token_id, self.device,
                self.dtype, self._accepts_logits_to_keep)
            if self._share_blocker:
                log.warning("not sharing prefixes across questions: %s", self._share_blocker)
        self.static_cache = static_cache
        self._greedy_blocker = (
            "fast=False" if not fast else "static_cache=True" if static_cache
            else greedy_loop_blocker(self.model, self.tokenizer.eos_token_id)
        )
        if fast and self._greedy_blocker:
            log.info("generating with model.generate: %s", self._greedy_blocker)
        # Merging per-group prefill caches needs caches that keep every position.
        self._grouped_prefill = self._greedy_blocker is None and has_plain_cache(self.model)

    # -- description --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            **self._loaded.describe(self.max_length),
            # How numbers were computed: the layouts agree to float rounding, not bit for bit.
            "engine": {
                "scoring": "prefix-tree" if self._tree_blocker is None else "plain",
                "shared_prefixes": self._share_blocker is None,
                "generation": "greedy-loop" if self._greedy_blocker is None
                else "model.generate, static cache" if self.static_cache else "model.generate",
                # Only when set, so the specs (and run ids) of batched runs stay as they were.
                **({"batch_invariant": True} if self.batch_invariant else {}),
            },
        }

    # -- tokenisation (lm-eval's rules) ---------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return tokenization.encode(self.tokenizer, text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return tokenization.encode_pair(self.tokenizer, context, continuation, self.prefix_token_id)

    # -- scoring --------------------------------------------------------------------------------

    def encode_pairs(self, requests: Sequence[ChoiceRequest]) -> list[list[tuple[list[int], list[int]]]]:
        return tokenization.encode_pairs(self.tokenizer, [(r.context, r.continuations) for r in requests],
                                         self.prefix_token_id)

    def _plan_scores(self, requests: Sequence[ChoiceRequest]) -> _ScorePlan:
        plan = _ScorePlan([], [], [], [], {})
        for index, (request, pairs) in enumerate(zip(requests, self.encode_pairs(requests), strict=True)):
            for option, (_, continuation) in zip(request.continuations, pairs, strict=True):
                if not continuation:
                    raise HarnessError(f"request {index}: the continuation {option!r} encodes to no tokens; "
                                       "an answer option must not be empty")
            # lm-eval's window: the last max_length tokens of context + continuation, minus the last.
            windows = [(c + k)[-(self.max_length + 1):][:-1] for c, k in pairs]
            continuations = [k for _, k in pairs]
            tree = None
            # A window cut at the model's length keeps the plain layout, which is lm-eval's
            # computation for it by construction; so does the degenerate empty-context case.
            whole = all(len(c) + len(k) <= self.max_length + 1 for c, k in pairs)
            if not whole:
                needed = max(len(c) + len(k) for c, k in pairs) - 1  # the window's input, uncut
                plan.cut[index] = (f"its context and continuation are {needed} tokens", self.max_length)
            known = len(pairs[0][0]) if all(c == pairs[0][0] for c, _ in pairs) else 0
            if self._tree_blocker is None and whole and known >= 1:
                tree = build_tree(windows, continuations, known=known)
            plan.windows.append(windows)
            plan.continuations.append(continuations)
            plan.trees.append(tree)
            plan.shared.append(0)
        return plan

    def _tree_batches(self, plan: _ScorePlan, members: list[int]) -> list[list[int]]:
        """Batches (positions in `members`) of the tree-layout requests, sharing prefixes across
        questions where that is estimated to pay (and recording them in `plan.shared`)."""
        trees: list[Tree] = [plan.trees[i] for i in members]  # type: ignore[misc]
        lengths = [len(t) for t in trees]
        if self._share_blocker is None:
            # A group must save at least what a forward call costs to be worth keeping together.
            groups = shared_prefix_groups([t.chain[:t.shareable] for t in trees], least_saving=self._call_cost)
            batches = shared_prefix_batches(lengths, groups, self.batch_tokens, self._call_cost, self._pair_cost)
            if batches is not None:
                for member, (_, length) in zip(members, groups, strict=True):
                    plan.shared[member] = length
                return batches
        return list(token_budget_batches(lengths, self.batch_tokens, call_cost=self._call_cost))

    def score(
        self, requests: Sequence[ChoiceRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        plan = self._plan_scores(requests)
        self.truncated += handle_overflow(self.on_overflow, "scoring", plan.cut, len(requests), self.max_length)

        def run(batch: list[int]) -> list[tuple[int, tuple[ScoreResult, ...]]]:
            return self._score_batch(batch, plan)

        skipped = set(done)
        for batch in self._score_batches(plan):
            if not skipped.issuperset(batch):
                yield with_oom_backoff(batch, run, self.device)

    def _score_batches(self, plan: _ScorePlan) -> list[list[int]]:
        # Trees and plain rows are planned apart (a batch is one layout), each a pure function of
        # the whole request list, so a resumed run meets the same batch shapes.
        if self.batch_invariant:
            return [[i] for i in range(len(plan.trees))]
        batches = []
        for tree_layout in (True, False):
            members = [i for i, t in enumerate(plan.trees) if (t is not None) == tree_layout]
            planned = self._tree_batches(plan, members) if tree_layout else token_budget_batches(
                [max(len(w) for w in plan.windows[i]) for i in members], self.batch_tokens,
                [len(plan.windows[i]) for i in members], self._call_cost)
            batches += [[members[p] for p in positions] for positions in planned]
        return batches

    def plan_batches(self, requests: Sequence[ChoiceRequest] | Sequence[GenerateRequest]) -> list[list[int]]:
        """The batches (request indices) `score` or `generate` runs `requests` in, for data-parallel
        processes to take whole ones (`harness.eval.shares`); nothing is computed or counted."""
        if requests and isinstance(requests[0], GenerateRequest):
            return self._generation_batches(requests, self._generation_contexts(requests)[0])  # type: ignore[arg-type]
        return self._score_batches(self._plan_scores(requests))  # type: ignore[arg-type]

    def _score_batch(self, batch: list[int], plan: _ScorePlan) -> list[tuple[int, tuple[ScoreResult, ...]]]:
        trees = [plan.trees[i] for i in batch]
        if all(t is not None for t in trees):
            shared = [plan.shared[i] for i in batch]
            tree_batch = batch_trees(trees, self.tokenizer.pad_token_id, shared)  # type: ignore[arg-type]
            scored = score_trees(self.model, tree_batch, self.device, self.dtype, self._accepts_logits_to_keep)
        else:
            scored = score_plain(
                self.model, [w for i in batch for w in plan.windows[i]],
                [k for i in batch for k in plan.continuations[i]],
                self.tokenizer.pad_token_id, self.device, self._accepts_logits_to_keep,
            )
        results, position = [], 0
        for index in batch:
            count = len(plan.windows[index])
            results.append((index, tuple(scored[position: position + count])))
            position += count
        return results

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerateRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, str]]]:
        """Yield (request index, text) lists: with the greedy loop, the rows that finish at a decode
        step as soon as they do, so a kill loses only rows still decoding; `model.generate` (fast=False,
        static_cache, a model the loop cannot reproduce) ends every row of a call together, so there
        each batch is yielded whole. A batch runs whole when any of its requests is not in `done`."""
        contexts, cut = self._generation_contexts(requests)
        self.truncated += handle_overflow(self.on_overflow, "generation", cut, len(requests), self.max_length)

        def run(batch: list[int]) -> Iterator[list[tuple[int, str]]]:
            return self._generate_batch(batch, requests, contexts)

        skipped = set(done)
        for batch in self._generation_batches(requests, contexts):
            if not skipped.issuperset(batch):
                yield from stream_with_oom_backoff(batch, run, self.device)

    def _generation_contexts(self, requests: Sequence[GenerateRequest]) -> tuple[list[list[int]], dict[int, Any]]:
        """Each prompt's ids, cut from the left to leave room for its new tokens, and the cut ones."""
        contexts, cut = [], {}
        encoded = tokenization.encode_batch(self.tokenizer, [r.context for r in requests])
        for index, (request, ids) in enumerate(zip(requests, encoded, strict=True)):
            room = self.max_length - request.max_new_tokens
            if request.max_new_tokens < 1 or room <= 0:
                raise HarnessError(f"request {index}: max_new_tokens {request.max_new_tokens} must be at least 1 and "
                                   f"leave room for a prompt in the model's {self.max_length} tokens; change "
                                   "generation.max_new_tokens")
            if len(ids) > room:
                cut[index] = (f"its prompt of {len(ids)} tokens plus max_new_tokens {request.max_new_tokens} is "
                              f"{len(ids) + request.max_new_tokens} tokens", room)
            contexts.append(ids[-room:])
        return contexts, cut

    def _generation_batches(self, requests: Sequence[GenerateRequest], contexts: list[list[int]]) -> list[list[int]]:
        """Generation batches, a pure function of the requests (so a resumed run meets the same shapes).

        The greedy loop gives every row its own token limit and stop strings, so requests of every
        task share one plan: fewer batches mean fewer decode steps, each of which reads every weight.
        With grouped prefill a batch's padding is never computed (its prompts are prefilled in groups
        of similar length), so batches are cut only to keep the cache within DECODE_CACHE_FACTOR
        budgets, each row counted as at least DECODE_CACHE_FACTOR positions so that a decode step's
        rows stay within one budget; pricing a cut at a whole cache budget makes the fewest batches
        the cheapest plan. `model.generate` takes one limit and stop list per call, so there requests
        are grouped by both and batches priced as padded prefill plus a call per new token.
        """
        if self.batch_invariant:
            return [[i] for i in range(len(requests))]
        lengths = [len(c) + r.max_new_tokens for c, r in zip(contexts, requests, strict=True)]
        groups: dict[tuple[int, tuple[str, ...]] | None, list[int]] = {}
        for index, request in enumerate(requests):
            key = None if self._greedy_blocker is None else (request.max_new_tokens, request.stop)
            groups.setdefault(key, []).append(index)
        batches = []
        for members in groups.values():
            if self._grouped_prefill:
                budget = call_cost = self.batch_tokens * DECODE_CACHE_FACTOR
                sizes = [max(lengths[i], DECODE_CACHE_FACTOR) for i in members]
            else:
                budget, sizes = self.batch_tokens, [lengths[i] for i in members]
                call_cost = self._call_cost * (1 + max(requests[i].max_new_tokens for i in members))
            for positions in token_budget_batches(sizes, budget, call_cost=call_cost):
                batches.append([members[p] for p in positions])
        return batches

    @torch.inference_mode()
    def _generate_batch(
        self, batch: list[int], requests: Sequence[GenerateRequest], contexts: list[list[int]]
    ) -> Iterator[list[tuple[int, str]]]:
        eos = self.tokenizer.eos_token
        stops = [[s for s in (*requests[i].stop, eos) if s] for i in batch]
        prompts = [contexts[i] for i in batch]
        limits = [requests[i].max_new_tokens for i in batch]
        finished: Iterator[list[tuple[int, list[int]]]]
        if self._greedy_blocker is None:
            groups = None
            if self._grouped_prefill:
                # Prompts prefilled in groups of similar length (little padding), then decoded together.
                groups = list(token_budget_batches([len(p) for p in prompts], self.batch_tokens,
                                                   call_cost=self._call_cost))
            finished = greedy_rows(
                self.model, prompts, limits, pad_id=self.tokenizer.pad_token_id,
                eos_id=self.tokenizer.eos_token_id, stopper=StopChecker(self.tokenizer, stops), prefill_groups=groups,
            )
        else:
            finished = iter([list(enumerate(self._hf_generate(prompts, limits[0], stops[0])))])
        for rows in finished:
            results = []
            for row, tokens in rows:
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                for term in stops[row]:
                    text = text.split(term)[0]
                results.append((batch[row], text))
            yield results

    def _hf_generate(self, prompts: list[list[int]], max_new_tokens: int, stops: list[str]) -> list[list[int]]:
        """`model.generate` on left-padded prompts: the generated ids of each row (after the prompt)."""
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_strings=stops or None,
            tokenizer=self.tokenizer,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
            **({"cache_implementation": "static"} if self.static_cache else {}),
        )
        return [output[row, width:].tolist() for row in range(len(prompts))]
