"""lm-eval's tokenisation rules for a (context, continuation) pair, shared by evaluation and training.

A score is only comparable when the model saw the same token ids, and a model is only trained on
what it will be evaluated on when training tokenises the same way; so the evaluation backend and the
trainer both call these functions. The rules (lm-eval's hf backend): trailing context whitespace
moves onto the continuation, the pair is encoded whole and split at the context's length, the
tokenizer's own special-token rule applies unless the text already starts with BOS, and an empty
context is replaced by the prefix id (BOS, else EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text`; no second BOS when the text (a chat-template string) already has one."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def encode_pair(tokenizer: Any, context: str, continuation: str, prefix_token_id: int) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) exactly as lm-eval's hf backend splits them."""
    if not context:
        continuation_ids = tokenizer.encode(continuation, add_special_tokens=False)
        if continuation_ids and continuation_ids[0] == prefix_token_id:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix_token_id], continuation_ids
    stripped = context.rstrip()
    if len(stripped) < len(context):
        continuation = context[len(stripped):] + continuation
        context = stripped
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return context_ids, whole[len(context_ids):]


def encode_batch(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of many texts in one tokenizer call per BOS rule (the per-call overhead dominates
    short texts)."""
    bos = tokenizer.bos_token
    starts = [bool(bos) and t.startswith(bos) for t in texts]
    out: list[list[int]] = [[] for _ in texts]
    for flag in (False, True):
        chosen = [i for i, s in enumerate(starts) if s == flag]
        if chosen:
            encoded = tokenizer([texts[i] for i in chosen], add_special_tokens=not flag)["input_ids"]
            for i, ids in zip(chosen, encoded, strict=True):
                out[i] = list(ids)
    return out


def encode_pairs(tokenizer: Any, questions: Sequence[tuple[str, Sequence[str]]],
                 prefix_token_id: int) -> list[list[tuple[list[int], list[int]]]]:
    """`encode_pair` of every option of every (context, options) question, each context encoded
    once, in two tokenizer calls in all (the same ids as calling `encode_pair` option by option)."""
    contexts, wholes = [], []
    for context, options in questions:
        if context:
            contexts.append(context.rstrip())
            wholes.extend(context + option for option in options)
    context_ids, whole_ids = iter(encode_batch(tokenizer, contexts)), iter(encode_batch(tokenizer, wholes))
    pairs = []
    for context, options in questions:
        if not context:
            pairs.append([encode_pair(tokenizer, "", option, prefix_token_id) for option in options])
            continue
        ids = next(context_ids)
        pairs.append([(ids, next(whole_ids)[len(ids):]) for _ in options])
    return pairs


def prefix_token_id(tokenizer: Any) -> int:
    """The id lm-eval puts before an empty context: BOS, else EOS."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id
