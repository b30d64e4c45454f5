"""The transformers backend against direct computations on the tiny model."""

from __future__ import annotations

import pytest
import torch

from harness.engine import ChoiceRequest, GenerateRequest
from harness.engine.batching import shared_prefix_batches, token_budget_batches
from harness.engine.hf import attention_pair_cost
from tests.conftest import collect


def reference_logprob(backend, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | everything before), one unbatched forward pass."""
    context_ids, continuation_ids = backend.encode_pair(context, continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = backend.model(input_ids=ids).logits[0].log_softmax(-1)
    start = len(context_ids)
    return sum(float(logprobs[start - 1 + i, t]) for i, t in enumerate(continuation_ids))


def test_trailing_context_space_moves_to_the_continuation(plain_backend):
    assert plain_backend.encode_pair("Answer: ", "yes") == plain_backend.encode_pair("Answer:", " yes")
    context_ids, _ = plain_backend.encode_pair("Answer:", " yes")
    assert context_ids[0] == plain_backend.tokenizer.bos_token_id


def test_empty_context_is_conditioned_on_bos(plain_backend):
    context_ids, continuation_ids = plain_backend.encode_pair("", "hello")
    assert context_ids == [plain_backend.tokenizer.bos_token_id]
    assert continuation_ids == plain_backend.tokenizer.encode("hello", add_special_tokens=False)


def test_scores_equal_unbatched_reference(plain_backend):
    requests = [
        ChoiceRequest("Is 12 even or odd?\nAnswer:", (" even", " odd")),
        ChoiceRequest("The larger of 603 and 581 is", (" 603", " 581", " neither of the two")),
        ChoiceRequest("x", (" y",)),
    ]
    results = collect(plain_backend.score(requests))
    for index, request in enumerate(requests):
        for option, result in zip(request.continuations, results[index], strict=True):
            assert result.logprob == pytest.approx(reference_logprob(plain_backend, request.context, option), abs=1e-4)
            assert result.num_tokens == len(plain_backend.encode_pair(request.context, option)[1])


def test_out_of_memory_resplits_the_batch_and_loses_nothing(plain_backend, monkeypatch):
    requests = [ChoiceRequest(f"Number {i} is", (" even", " odd")) for i in range(6)]
    expected = collect(plain_backend.score(requests))
    real = plain_backend._score_batch
    sizes = []

    def flaky(batch, *args):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, *args)

    monkeypatch.setattr(plain_backend, "_score_batch", flaky)
    recovered = collect(plain_backend.score(requests))
    assert sizes == [6, 3, 1, 2, 3, 1, 2]  # halved until it fits, every request kept
    assert set(recovered) == set(expected)
    for index, results in expected.items():
        assert [r.logprob for r in recovered[index]] == pytest.approx([r.logprob for r in results], abs=1e-5)


def test_done_requests_are_skipped_batch_by_batch(plain_backend, monkeypatch):
    requests = [ChoiceRequest(f"Row number {i} reads", (" a",)) for i in range(5)]
    monkeypatch.setattr(plain_backend, "batch_tokens", 1)  # one request per batch
    assert set(collect(plain_backend.score(requests, done={0, 1, 2, 4}))) == {3}
    # With bigger batches, a batch runs whole when any member is missing (the same shapes as before).
    monkeypatch.setattr(plain_backend, "batch_tokens", 10_000)
    assert set(collect(plain_backend.score(requests, done={0, 1, 2, 4}))) == {0, 1, 2, 3, 4}
    assert collect(plain_backend.score(requests, done={0, 1, 2, 3, 4})) == {}


def greedy_reference(backend, context: str, max_new_tokens: int, stop: str) -> str:
    ids = backend.encode(context)
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = backend.model(input_ids=torch.tensor([ids + generated])).logits[0, -1]
            token = int(logits.argmax())
            if token == backend.tokenizer.eos_token_id:
                break
            generated.append(token)
    return backend.tokenizer.decode(generated, skip_special_tokens=True).split(stop)[0]


def test_generation_equals_a_plain_greedy_loop(plain_backend):
    contexts = ["9 + 12 =", "Name the person: Farah went to Dublin.\nName:", "List: cat, dog\nFirst:"]
    requests = [GenerateRequest(c, 12, ("\n",)) for c in contexts]
    results = collect(plain_backend.generate(requests))
    for index, context in enumerate(contexts):
        assert results[index] == greedy_reference(plain_backend, context, 12, "\n")


def test_token_budget_batches_cover_everything_within_budget():
    lengths = [5, 40, 12, 12, 3, 40, 7]
    batches = list(token_budget_batches(lengths, budget=48))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 48
    # Longest first, and an item bigger than the budget still gets its own batch.
    assert batches[0] == [1] and list(token_budget_batches([100, 1], budget=10)) == [[0], [1]]
    # Options of one question count as several rows.
    assert list(token_budget_batches([10, 10], budget=40, rows=[3, 2])) == [[0], [1]]


def test_shared_prefix_batches_keep_groups_together_within_budget():
    # Two groups of six items of 100 tokens, 80 of them the group's prefix, and three items alone.
    lengths = [100] * 12 + [90, 50, 20]
    groups = [(i % 2, 80) for i in range(12)] + [(-1, 0)] * 3
    batches = shared_prefix_batches(lengths, groups, budget=1000, call_cost=64)
    assert batches is not None
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        prefix = max(groups[i][1] for i in batch)
        own = max(lengths[i] - groups[i][1] for i in batch)
        assert len(batch) == 1 or len(batch) * (prefix + own) <= 1000  # every row's cache fits
    assert any(set(range(0, 12, 2)) <= set(b) for b in batches)  # a group's prefix is computed once
    assert any(set(range(1, 12, 2)) <= set(b) for b in batches)
    # Nothing to share, or too little to pay for the prefix's own call: no shared batches.
    assert shared_prefix_batches(lengths, [(-1, 0)] * len(lengths), budget=1000) is None
    assert shared_prefix_batches([300, 310], [(0, 8), (0, 8)], budget=4096, call_cost=64) is None
    # Long rows after a short prefix: fewer positions, but where attention is dear (a narrow model)
    # attending to a cached prefix through a mask costs more than the causal kernel saves.
    long = ([700] * 4, [(0, 90)] * 4)
    assert shared_prefix_batches(*long, budget=4096, call_cost=64) == [[0, 1, 2, 3]]
    assert shared_prefix_batches(*long, budget=4096, call_cost=64, pair_cost=0.002) is None


def test_attention_pair_cost_weighs_attention_against_the_body(plain_backend):
    config = plain_backend.model.config
    cost = attention_pair_cost(plain_backend.model)
    assert cost > 0
    # Per layer: 4 x hidden FLOPs for a query-key pair, against 2 FLOPs per body weight for a position.
    body_per_layer = 2 * config.hidden_size / cost
    assert 12 * config.hidden_size ** 2 <= body_per_layer <= 20 * config.hidden_size ** 2
