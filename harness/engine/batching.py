"""Batching by token budget rather than by request count.

A batch's cost is (rows x longest row), so grouping length-sorted requests under a token budget
keeps memory flat whether prompts are 20 tokens or 2,000, where a fixed count either wastes the
device on short prompts or runs out of memory on long ones.

Within the budget, where to cut the sorted list is chosen to minimise the padded positions the
model computes plus a fixed cost per forward call: one greedy batch over prompts of 10 to 60
tokens pads every row to 60, nearly doubling the work, while cutting at every length change would
pay the per-call overhead hundreds of times.

Batches are a pure function of the whole request list. A resumed run plans the same batches as an
uninterrupted one and skips those already written, so every number it computes comes from the same
batch shapes and is bit-for-bit what the uninterrupted run would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

CALL_COST = {"cpu": 64, "cuda": 4096}
"""What one more forward call costs, in token positions, by device type: Python and launch overhead
(plus, for a small model decoding a few rows, reading every weight). On the 2-core CPU a 20M-parameter
Llama runs one decode step in the time of ~20 prefill positions; on a GPU one call is worth
thousands of positions (an estimate, not measured here: no GPU was available)."""


def token_budget_batches(
    lengths: Sequence[int], budget: int, rows: Sequence[int] | None = None, call_cost: int = CALL_COST["cpu"]
) -> Iterator[list[int]]:
    """Yield lists of item indices, longest first, each costing at most `budget` padded tokens.

    `rows[i]` is how many sequences item i contributes (the answer options of one question are
    scored together); it defaults to one. An item larger than the budget still gets a batch of its
    own: refusing it would lose the request, and out-of-memory backoff is the place to deal with it.
    Cuts minimise sum(rows x longest + call_cost) over batches (dynamic programming over the
    length-sorted order, O(items x rows per batch)).
    """
    count = len(lengths)
    if count == 0:
        return
    order = sorted(range(count), key=lambda i: (-lengths[i], i))
    length = np.array([lengths[i] for i in order], dtype=np.int64)
    weight = np.array([rows[i] if rows is not None else 1 for i in order], dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(weight)])  # rows before position j
    best = np.zeros(count + 1, dtype=np.float64)  # best[j]: cheapest cover of the first j items
    start = np.zeros(count + 1, dtype=np.int64)
    first = 0  # earliest possible start of a batch ending at j (moves forward only)
    for j in range(1, count + 1):
        # A batch [i, j) is padded to length[i], the longest; it fits when its rows x that <= budget.
        while first < j - 1 and (before[j] - before[first]) * length[first] > budget:
            first += 1
        starts = np.arange(first, j)
        costs = best[first:j] + (before[j] - before[first:j]) * length[first:j] + call_cost
        pick = int(np.argmin(costs))  # ties go to the earliest start: fewer, larger batches
        best[j], start[j] = costs[pick], starts[pick]
    cuts = []
    j = count
    while j > 0:
        cuts.append((int(start[j]), j))
        j = int(start[j])
    for i, j in reversed(cuts):
        yield order[i:j]
