"""Batching by token budget rather than by request count.

A batch's cost is (rows x longest row), so grouping length-sorted requests under a token budget
keeps memory flat whether prompts are 20 tokens or 2,000, where a fixed count either wastes the
device on short prompts or runs out of memory on long ones.

Within the budget, where to cut the sorted list is chosen to minimise the padded positions the
model computes plus a fixed cost per forward call: one greedy batch over prompts of 10 to 60
tokens pads every row to 60, nearly doubling the work, while cutting at every length change would
pay the per-call overhead hundreds of times.

Questions that begin with the same tokens (a template's instruction) can have those computed once
per batch (`shared_prefix_batches`): a batch then costs its distinct prefixes plus its rows' own
positions, and its items are ordered group by group so that members meet in one batch.

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

DECODE_CACHE_FACTOR = 16
"""A generation batch may hold this many times the token budget in its cache. Its prompts are
prefilled in groups within the budget, and each decode step computes one position per row, so the
budget bounds every forward's activations; what grows with the batch is the KV cache alone (per
position, 2 x layers x KV width values against the tens of hidden-size activations of a prefill
position). Decode steps cost nearly the same whatever the number of rows (every weight is read
once per step), so fewer, larger batches take fewer steps: a 16x cache is ~2 GiB for a 1B Llama
in bfloat16 at the default 4,096-token budget, and out-of-memory backoff halves a batch that does
not fit."""

SHARING_MARGIN = 0.98
"""Shared-prefix batches are used where estimated to cost at most this fraction of the plain ones:
the estimate leaves out copying each prefix's cache into its rows and building their masks, and
an estimated gain of a fraction of a percent measured as no gain (a 20M model, 5-shot)."""


def _cheapest_cuts(
    length: np.ndarray, prefix: np.ndarray, opens: np.ndarray, weight: np.ndarray, budget: int, call_cost: int,
    pair_cost: float = 0.0,
) -> tuple[float, list[tuple[int, int]]]:
    """Cut items, in the given order, into consecutive batches of least total cost.

    Item k has `length[k]` positions of its own, after a shared prefix of `prefix[k]` tokens (0: none;
    the members of a prefix group are consecutive and `opens[k]` is 1 at each group's first item).
    A batch [i, j) costs rows x its longest own length, plus each of its distinct prefixes padded to
    the longest, plus a call (two with prefixes: they run first, in a call of their own); it fits
    when every row, padded to the longest prefix and the longest own length, stays within the
    budget (the width of its cache). `pair_cost` prices attention, per query-key pair: causal
    attention over a row's own positions computes about half the square (its kernel skips the
    rest), while rows that continue a cached prefix attend through a mask over prefix and own
    keys, every pair computed. Dynamic programming over the cut points, O(items x rows per batch).
    Returns the total cost and the batches as [i, j) ranges.
    """
    count = len(length)
    before = np.concatenate([[0], np.cumsum(weight)])  # rows before position j
    groups_before = np.concatenate([[0], np.cumsum(opens)])
    best = np.zeros(count + 1, dtype=np.float64)  # best[j]: cheapest cover of the first j items
    start = np.zeros(count + 1, dtype=np.int64)
    first = 0  # earliest possible start of a batch ending at j (moves forward only)
    for j in range(1, count + 1):
        # Longest own length and prefix of each candidate batch [i, j), i = first .. j-1.
        own = np.maximum.accumulate(length[first:j][::-1])[::-1]
        shared = np.maximum.accumulate(prefix[first:j][::-1])[::-1]
        rows = before[j] - before[first:j]
        fits = rows * (own + shared) <= budget
        fits[-1] = True  # an item larger than the budget still gets a batch of its own
        skip = int(np.argmax(fits))  # fitting is monotone: once a start fits, later ones do
        first += skip
        own, shared, rows = own[skip:], shared[skip:], rows[skip:]
        # Distinct prefixes in [i, j): groups opening after i, plus i's own.
        prefixes = groups_before[j] - groups_before[first + 1:j + 1] + (prefix[first:j] > 0)
        pairs = np.where(shared > 0, prefixes * shared * shared / 2 + rows * own * (shared + own), rows * own * own / 2)
        costs = best[first:j] + rows * own + prefixes * shared + call_cost * (1 + (shared > 0)) + pair_cost * pairs
        pick = int(np.argmin(costs))  # ties go to the earliest start: fewer, larger batches
        best[j], start[j] = costs[pick], first + pick
    cuts = []
    j = count
    while j > 0:
        cuts.append((int(start[j]), j))
        j = int(start[j])
    return float(best[count]), cuts[::-1]


def token_budget_batches(
    lengths: Sequence[int], budget: int, rows: Sequence[int] | None = None, call_cost: int = CALL_COST["cpu"]
) -> Iterator[list[int]]:
    """Yield lists of item indices, longest first, each costing at most `budget` padded tokens.

    `rows[i]` is how many sequences item i contributes (the answer options of one question are
    scored together); it defaults to one. An item larger than the budget still gets a batch of its
    own: refusing it would lose the request, and out-of-memory backoff is the place to deal with it.
    Cuts minimise sum(rows x longest + call_cost) over batches.
    """
    count = len(lengths)
    if count == 0:
        return
    order = sorted(range(count), key=lambda i: (-lengths[i], i))
    weight = np.array([rows[i] if rows is not None else 1 for i in order], dtype=np.int64)
    none = np.zeros(count, dtype=np.int64)
    _, cuts = _cheapest_cuts(np.array([lengths[i] for i in order], dtype=np.int64), none, none, weight,
                             budget, call_cost)
    for i, j in cuts:
        yield order[i:j]


def shared_prefix_batches(
    lengths: Sequence[int], groups: Sequence[tuple[int, int]], budget: int, call_cost: int = CALL_COST["cpu"],
    pair_cost: float = 0.0,
) -> list[list[int]] | None:
    """Batches in which items of one prefix group share their prefix, computed once per batch; or
    None where those are not estimated to cost clearly less (`SHARING_MARGIN`) than
    `token_budget_batches`' (then share nothing).

    `groups[i]` is item i's (group, prefix length), (-1, 0) for none, as `shared_prefix_groups`
    gives them; `lengths[i]` counts the prefix. Items are ordered group by group (groups longest
    first, members longest first), so that members meet in a batch, then cut as `_cheapest_cuts`
    prices it: a batch pays for each of its prefixes once and for the rows' own positions. Ordering
    by group can pad more than ordering by length, and attention after a cached prefix computes
    every query-key pair (`pair_cost` each, as `_cheapest_cuts`), which on a model as narrow as the
    built-in tiny one outweighs a prefix of a few percent of each row; hence the comparison with
    the plain batches, priced alike.
    """
    count = len(lengths)
    if count == 0 or all(group < 0 for group, _ in groups):
        return None
    keys = [group if group >= 0 else -1 - i for i, (group, _) in enumerate(groups)]  # ungrouped: alone
    longest: dict[int, int] = {}
    opened: dict[int, int] = {}
    for i, key in enumerate(keys):
        longest[key] = max(longest.get(key, 0), lengths[i])
        opened.setdefault(key, i)
    order = sorted(range(count), key=lambda i: (-longest[keys[i]], opened[keys[i]], -lengths[i], i))
    prefix = np.array([groups[i][1] for i in order], dtype=np.int64)
    opens = np.array([prefix[k] > 0 and (k == 0 or keys[order[k]] != keys[order[k - 1]]) for k in range(count)],
                     dtype=np.int64)
    own = np.array([lengths[i] for i in order], dtype=np.int64) - prefix
    ones = np.ones(count, dtype=np.int64)
    cost, cuts = _cheapest_cuts(own, prefix, opens, ones, budget, call_cost, pair_cost)
    plain_order = sorted(range(count), key=lambda i: (-lengths[i], i))
    none = np.zeros(count, dtype=np.int64)
    plain_cost, _ = _cheapest_cuts(np.array([lengths[i] for i in plain_order], dtype=np.int64), none, none, ones,
                                   budget, call_cost, pair_cost)
    if cost > SHARING_MARGIN * plain_cost:
        return None
    return [order[i:j] for i, j in cuts]
