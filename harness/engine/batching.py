"""Batching by token budget rather than by request count.

A batch's cost is (rows x longest row), so grouping length-sorted requests under a token budget
keeps memory flat whether prompts are 20 tokens or 2,000, where a fixed count either wastes the
device on short prompts or runs out of memory on long ones.

Batches are a pure function of the whole request list. A resumed run plans the same batches as an
uninterrupted one and skips those already written, so every number it computes comes from the same
batch shapes and is bit-for-bit what the uninterrupted run would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def token_budget_batches(
    lengths: Sequence[int], budget: int, rows: Sequence[int] | None = None
) -> Iterator[list[int]]:
    """Yield lists of item indices, longest first, each costing at most `budget` padded tokens.

    `rows[i]` is how many sequences item i contributes (the answer options of one question are
    scored together); it defaults to one. An item larger than the budget still gets a batch of its
    own: refusing it would lose the request, and out-of-memory backoff is the place to deal with it.
    """
    weights = rows if rows is not None else [1] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    batch_rows = 0
    for index in order:
        # Sorted descending, so the first item of a batch is its longest.
        longest = lengths[batch[0]] if batch else lengths[index]
        if batch and (batch_rows + weights[index]) * longest > budget:
            yield batch
            batch, batch_rows = [], 0
        batch.append(index)
        batch_rows += weights[index]
    if batch:
        yield batch
