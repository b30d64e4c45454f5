"""The transformers backend: continuation log-likelihoods and greedy generation.

Tokenisation follows lm-eval's hf backend exactly, because a score is only comparable when the
model saw the same token ids: trailing context whitespace moves onto the continuation, the pair is
encoded whole and split at the context's length, the tokenizer's own special-token rule applies
unless the text already starts with BOS, and an empty context is replaced by the BOS (else EOS) id.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from harness.engine.base import ChoiceRequest, GenerateRequest, ScoreResult
from harness.engine.batching import token_budget_batches
from harness.errors import HarnessError

log = logging.getLogger(__name__)
T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_LENGTH = 2048


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _files_digest(folder: Path, patterns: Sequence[str]) -> str | None:
    """sha256 over the named files of a model folder, so a run record pins the exact weights."""
    files = sorted(f for p in patterns for f in folder.glob(p) if f.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class HFBackend:
    """A causal LM and its tokenizer, loaded from a local folder or a hub id."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        batch_tokens: int = 4096,
        max_length: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype != "auto" and dtype not in _DTYPES:
            raise HarnessError(f"--dtype {dtype!r} is not supported; use auto, {', '.join(_DTYPES)}")
        torch_dtype = _DTYPES.get(dtype, torch.float32 if self.device.type == "cpu" else torch.bfloat16)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device)
        except (OSError, ValueError, KeyError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HarnessError(
                f"{model}: cannot load a causal LM ({first_line}); pass a folder with config.json, weights "
                "and tokenizer files, or a hub id when online"
            ) from None
        self.model.eval()
        if self.device.type == "cpu":
            # Denormal floats make CPU matmuls many times slower; flushing them changes nothing measurable.
            torch.set_flush_denormal(True)
        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.vocab_width = self.model.get_output_embeddings().weight.shape[0]
        self.dtype = torch_dtype
        self.batch_tokens = batch_tokens
        config_length = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = max_length or config_length or DEFAULT_MAX_LENGTH
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        bos = self.tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else self.tokenizer.eos_token_id

    # -- description --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        folder = Path(self.model_id)
        local = folder.is_dir()
        chat_template = getattr(self.tokenizer, "chat_template", None)
        return {
            "model": self.model_id,
            "local_path": str(folder.resolve()) if local else None,
            "weights_sha256": _files_digest(folder, ["*.safetensors", "*.bin"]) if local else None,
            "hub_commit": getattr(self.model.config, "_commit_hash", None),
            "architecture": type(self.model).__name__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "tokenizer": {
                "class": type(self.tokenizer).__name__,
                "vocab_size": len(self.tokenizer),
                "files_sha256": _files_digest(folder, ["tokenizer*.json", "*.model", "special_tokens_map.json"])
                if local else None,
                "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest()[:16]
                if isinstance(chat_template, str) else None,
            },
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
        }

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # -- tokenisation (lm-eval's rules) ---------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            continuation_ids = self.tokenizer.encode(continuation, add_special_tokens=False)
            if continuation_ids and continuation_ids[0] == self.prefix_token_id:
                return continuation_ids[:1], continuation_ids[1:]
            return [self.prefix_token_id], continuation_ids
        stripped = context.rstrip()
        if len(stripped) < len(context):
            continuation = context[len(stripped):] + continuation
            context = stripped
        whole = self.encode(context + continuation)
        context_ids = self.encode(context)
        return context_ids, whole[len(context_ids):]

    # -- scoring --------------------------------------------------------------------------------

    def _with_oom_backoff(self, indices: list[int], run: Callable[[list[int]], list[T]]) -> list[T]:
        """Run a batch; on out-of-memory split it in two and retry, so no request is lost."""
        try:
            return run(indices)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc) or len(indices) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(indices) // 2
            log.warning("out of memory on a batch of %d; retrying as %d + %d", len(indices), half,
                        len(indices) - half)
            return self._with_oom_backoff(indices[:half], run) + self._with_oom_backoff(indices[half:], run)

    def score(
        self, requests: Sequence[ChoiceRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        windows: list[list[list[int]]] = []
        continuations: list[list[list[int]]] = []
        for index, request in enumerate(requests):
            pairs = [self.encode_pair(request.context, c) for c in request.continuations]
            for option, (_, continuation) in zip(request.continuations, pairs, strict=True):
                if not continuation:
                    raise HarnessError(f"request {index}: the continuation {option!r} encodes to no tokens; "
                                       "an answer option must not be empty")
            # lm-eval's window: the last max_length tokens of context + continuation, minus the last.
            windows.append([(c + k)[-(self.max_length + 1):][:-1] for c, k in pairs])
            continuations.append([k for _, k in pairs])
        lengths = [max(len(w) for w in ws) for ws in windows]
        rows = [len(ws) for ws in windows]

        def run(batch: list[int]) -> list[tuple[int, tuple[ScoreResult, ...]]]:
            return self._score_batch(batch, windows, continuations)

        skipped = set(done)
        for batch in token_budget_batches(lengths, self.batch_tokens, rows):
            if not skipped.issuperset(batch):
                yield self._with_oom_backoff(batch, run)

    @torch.inference_mode()
    def _score_batch(
        self, batch: list[int], windows: list[list[list[int]]], continuations: list[list[list[int]]]
    ) -> list[tuple[int, tuple[ScoreResult, ...]]]:
        flat = [(w, k) for i in batch for w, k in zip(windows[i], continuations[i], strict=True)]
        width = max(len(w) for w, _ in flat)
        pad = self.tokenizer.pad_token_id
        # Right padding needs no attention mask: causal attention never looks at later positions.
        input_ids = torch.tensor([w + [pad] * (width - len(w)) for w, _ in flat], device=self.device)
        # The positions whose next-token distribution scores a continuation token, row-major.
        keep = torch.zeros(len(flat), width, dtype=torch.bool)
        for row, (window, continuation) in enumerate(flat):
            keep[row, len(window) - len(continuation): len(window)] = True
        keep = keep.to(self.device)
        if self._accepts_logits_to_keep:
            # Only the kept positions go through the LM head: the vocabulary projection is the
            # largest matrix of a small model and most positions of a prompt are never scored.
            logits = self.model(input_ids=input_ids, logits_to_keep=keep).logits.reshape(-1, self.vocab_width)
        else:
            logits = self.model(input_ids=input_ids).logits[keep]
        logprobs = logits.float().log_softmax(dim=-1)
        targets = torch.tensor([t for _, k in flat for t in k], device=self.device)
        token_logprobs = logprobs.gather(1, targets[:, None]).squeeze(1)
        token_greedy = logprobs.argmax(dim=-1) == targets
        # Lay token values out as (row, token) with zero padding and reduce along rows: deterministic
        # on every device (atomic scatter-adds are not), so resumed runs reproduce bit for bit.
        sizes = [len(k) for _, k in flat]
        rows = keep.nonzero()[:, 0]  # the row of each kept position, row-major like the logits
        slot = torch.tensor([j for n in sizes for j in range(n)], device=self.device)
        table = torch.zeros(len(flat), max(sizes), device=self.device)
        misses = torch.zeros(len(flat), max(sizes), device=self.device)
        table[rows, slot] = token_logprobs
        misses[rows, slot] = (~token_greedy).float()
        # One device-to-host copy per batch, not one per request.
        sums_list, misses_list = table.sum(dim=1).tolist(), misses.sum(dim=1).tolist()
        scored = [ScoreResult(sums_list[r], misses_list[r] == 0, sizes[r]) for r in range(len(flat))]
        results, position = [], 0
        for index in batch:
            count = len(windows[index])
            results.append((index, tuple(scored[position: position + count])))
            position += count
        return results

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerateRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, str]]]:
        contexts = [self.encode(r.context) for r in requests]
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.max_new_tokens, request.stop), []).append(index)
        skipped = set(done)
        for (max_new_tokens, stop), members in groups.items():
            room = self.max_length - max_new_tokens
            if room <= 0:
                raise HarnessError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                                   f"model's {self.max_length} tokens; lower generation.max_new_tokens")
            truncated = {i: contexts[i][-room:] for i in members}
            lengths = [len(truncated[i]) + max_new_tokens for i in members]

            def run(batch: list[int], truncated=truncated, max_new=max_new_tokens, stop=stop) -> list[tuple[int, str]]:
                return self._generate_batch(batch, truncated, max_new, stop)

            for positions in token_budget_batches(lengths, self.batch_tokens):
                batch = [members[p] for p in positions]
                if not skipped.issuperset(batch):
                    yield self._with_oom_backoff(batch, run)

    @torch.inference_mode()
    def _generate_batch(
        self, batch: list[int], contexts: dict[int, list[int]], max_new_tokens: int, stop: tuple[str, ...]
    ) -> list[tuple[int, str]]:
        width = max(len(contexts[i]) for i in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(contexts[i])) + contexts[i] for i in batch],
                                 device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(contexts[i])) + [1] * len(contexts[i]) for i in batch],
                                      device=self.device)
        eos = self.tokenizer.eos_token
        stops = [s for s in (*stop, eos) if s]
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_strings=stops or None,
            tokenizer=self.tokenizer,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        results = []
        for row, index in enumerate(batch):
            text = self.tokenizer.decode(output[row, width:].tolist(), skip_special_tokens=True)
            for term in stops:
                text = text.split(term)[0]
            results.append((index, text))
        return results
