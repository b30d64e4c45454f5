"""Prefix trees of token windows: every answer option of a question scored from one context pass.

The plain way to score a question with n options runs n rows that repeat the same context, so a
5-shot prompt of 300 tokens with four options costs 1,200 token positions for 300 tokens of
information. Here the option windows of one question are merged into a tree: a chain (the tokens
all windows share: the context, and any leading tokens all options share) and a trie of the rest
(options sharing leading tokens share those nodes too). A batch is computed in two forward passes
over one KV cache:

1. the chains, right-padded, under the model's ordinary causal attention (its fastest kernel);
2. the tries' nodes in depth-first order, with position ids set to their depth and a 4D mask by
   which each node sees its row's chain and its own ancestors in the trie, nothing else.

So every node computes what it computes in the plain layout, and only the shared work is done once.
A single-token option adds no node at all: it is scored from the chain's last position, like every
other single-token option of the question, and a question whose options are all single tokens
needs only pass 1.

Questions of one template also share tokens with each other: the instruction before the row's
own text, or a whole few-shot preamble. `shared_prefix_groups` finds such prefixes across the
questions of a run, and a batch may then compute each distinct prefix once (pass 0, its cache
copied to every row that starts with it), the rows' chains continuing after it in pass 1. A
shared prefix stops before a question's first scored position, so it never needs logits.

Everything here is plain Python and torch on the CPU with no model, so it can be tested in
isolation, and the device receives finished tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

MIN_SHARED_PREFIX = 8
"""Fewest tokens a prefix shared across questions must have to be computed once for them: a
shorter one saves less than the bookkeeping (and the padding of a batch ordered by group) costs."""


@dataclass(frozen=True)
class Tree:
    """One question's option windows: a shared chain, then a trie in depth-first (pre-)order.

    Nodes are numbered chain first (0 .. len(chain)-1, position = index), then trie nodes
    (len(chain) + i). Trie node a sees trie node b exactly when b <= a < tail_ends[b] (b is an
    ancestor of a, or a itself). `scored[j]` lists, for option j, the node whose next-token
    distribution scores each continuation token, with that token.
    """

    chain: tuple[int, ...]
    tail_tokens: tuple[int, ...]
    tail_depths: tuple[int, ...]
    tail_ends: tuple[int, ...]
    scored: tuple[tuple[tuple[int, int], ...], ...]

    def __len__(self) -> int:
        return len(self.chain) + len(self.tail_tokens)

    @property
    def shareable(self) -> int:
        """How many leading chain tokens may come from a prefix computed for several questions:
        those before the first scored position (a shared prefix yields no logits), leaving the
        question's own row at least one chain token."""
        first = min(node for option in self.scored for node, _ in option)
        return max(0, min(first, len(self.chain) - 1))


def common_prefix_length(windows: Sequence[Sequence[int]], known: int = 0) -> int:
    """Length of the prefix all windows share, given that they share the first `known` tokens."""
    shortest = min(len(w) for w in windows)
    first = windows[0]
    for position in range(known, shortest):
        token = first[position]
        if any(w[position] != token for w in windows):
            return position
    return shortest


def common_length(first: Sequence[int], second: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences.

    A binary search over slice comparisons, which run in C: a few-shot preamble of hundreds of
    tokens shared by thousands of questions would otherwise cost a Python step per token.
    """
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def shared_prefix_groups(
    sequences: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX, least_saving: int = 0
) -> list[tuple[int, int]]:
    """(group, prefix length) of each sequence: the members of a group share their first `prefix
    length` tokens; (-1, 0) for a sequence that shares no prefix worth computing once.

    Sorted, sequences that share a prefix lie together, and the prefix a run of them shares is the
    least common-prefix length between neighbours. Runs nest (every template of a task may begin
    with the same 10 tokens, the rows of one template with the same 300), so which runs become
    groups is chosen to save the most positions, (members - 1) x prefix length summed over groups:
    a run is split at its least neighbour length wherever its parts save more than the whole. A
    group must share `minimum` tokens and save `least_saving` positions: batches keep a group's
    members together, which costs padding and calls that two questions sharing ten tokens by
    chance do not repay. The result depends on the sequences alone, so a resumed run groups and
    batches as the first did.
    """
    count = len(sequences)
    result = [(-1, 0)] * count
    if count < 2:
        return result
    order = sorted(range(count), key=lambda i: (tuple(sequences[i]), i))
    between = np.array([common_length(sequences[a], sequences[b]) for a, b in pairwise(order)])
    # Runs [start, end) of `order` as a tree, parents before children (so reversed, children first).
    starts: list[int] = []
    ends: list[int] = []
    shared: list[int] = []
    children: list[list[int]] = []
    pending = [(0, count, -1)]
    while pending:
        start, end, parent = pending.pop()
        run = len(starts)
        if parent >= 0:
            children[parent].append(run)
        starts.append(start)
        ends.append(end)
        children.append([])
        if end - start < 2:
            shared.append(0)
            continue
        inner = between[start:end - 1]
        least = int(inner.min())
        shared.append(least)
        cuts = [start, *(start + 1 + np.flatnonzero(inner == least)).tolist(), end]
        pending.extend((a, b, run) for a, b in pairwise(cuts))
    saving = [0] * len(starts)
    whole = [False] * len(starts)
    for run in reversed(range(len(starts))):
        parts = sum(saving[child] for child in children[run])
        own = (ends[run] - starts[run] - 1) * shared[run] if shared[run] >= minimum else 0
        if own < least_saving:
            own = 0
        # On a tie, one group: one prefix to compute instead of several.
        whole[run] = own > 0 and own >= parts
        saving[run] = own if whole[run] else parts
    group = 0
    walk = [0]
    while walk:
        run = walk.pop()
        if whole[run]:
            for position in range(starts[run], ends[run]):
                result[order[position]] = (group, shared[run])
            group += 1
        else:
            walk.extend(children[run])
    return result


def build_tree(windows: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], known: int = 0) -> Tree:
    """Merge the plain path's windows (model inputs) of one question into a chain and a trie.

    A window is `(context + continuation)[:-1]` and its last len(continuation) positions predict
    the continuation tokens, exactly as in the plain path, so the tree computes the same numbers.
    The caller guarantees len(window) >= len(continuation) and that the windows share their first
    `known` tokens (the context), which spares comparing them. The Python work is proportional to
    the option tails, not to the context.
    """
    common = common_prefix_length(windows, known)
    children: list[dict[int, int]] = [{}]  # trie node 0: the chain's end, holding no token
    token_of: list[int] = [-1]
    paths: list[list[int]] = []
    for window in windows:
        node, path = 0, []
        for token in window[common:]:
            child = children[node].get(token)
            if child is None:
                child = len(token_of)
                children[node][token] = child
                children.append({})
                token_of.append(token)
            node = child
            path.append(node)
        paths.append(path)
    order: list[int] = []  # iterative pre-order walk, children in insertion order
    depth_of = [common - 1] * len(token_of)
    stack = [0]
    while stack:
        node = stack.pop()
        if node:
            order.append(node)
        for child in reversed(children[node].values()):
            depth_of[child] = depth_of[node] + 1
            stack.append(child)
    index = [0] * len(token_of)
    for i, node in enumerate(order):
        index[node] = common + i
    size = [1] * len(token_of)
    for node in reversed(order):  # children follow their parent in pre-order
        for child in children[node].values():
            size[node] += size[child]
    scored = []
    for path, window, continuation in zip(paths, windows, continuations, strict=True):
        start = len(window) - len(continuation)
        nodes = [p if p < common else index[path[p - common]] for p in range(start, len(window))]
        scored.append(tuple(zip(nodes, continuation, strict=True)))
    return Tree(
        chain=tuple(windows[0][:common]),
        tail_tokens=tuple(token_of[n] for n in order),
        tail_depths=tuple(depth_of[n] for n in order),
        tail_ends=tuple(index[n] - common + size[n] for n in order),
        scored=tuple(scored),
    )


@dataclass
class TreeBatch:
    """Padded CPU tensors for a batch of trees, one tree per row (the caller moves them).

    Pass 0 (absent when no row shares a prefix) reads `prefix_ids`, one row per distinct shared
    prefix; `prefix_rows[r]` is the prefix row whose cache row r continues. Pass 1 reads `chain_ids`
    (each row's chain after its shared prefix) and, after a pass 0, `chain_mask` (over prefix slots
    then chain slots) and `chain_positions`. Pass 2 (absent when no tree has a trie node) reads
    `tail_ids`, `tail_positions` and `tail_visible` (query trie node -> key: prefix slots, chain
    slots, then trie slots). `chain_keep` / `tail_keep` mark the nodes whose logits are needed, each
    once however many options read it. For the k-th scored token overall (options of all trees in
    order, tokens in order): `logit_rows[k]` is its row in cat(pass-1 logits, pass-2 logits),
    `option_index[k]` its option's index, `slot[k]` its place in the option, `targets[k]` the token.
    """

    chain_ids: torch.Tensor
    chain_keep: torch.Tensor
    tail_ids: torch.Tensor | None
    tail_positions: torch.Tensor | None
    tail_visible: torch.Tensor | None  # (rows, 1, tail width, prefix + chain width + tail width) bool
    tail_keep: torch.Tensor | None
    logit_rows: torch.Tensor
    option_index: torch.Tensor
    slot: torch.Tensor
    targets: torch.Tensor
    sizes: list[int]  # tokens per option
    prefix_ids: torch.Tensor | None = None
    prefix_rows: torch.Tensor | None = None
    chain_mask: torch.Tensor | None = None  # (rows, prefix width + chain width) 0/1
    chain_positions: torch.Tensor | None = None

    @property
    def positions(self) -> int:
        """Token positions the model computes for this batch, padding included."""
        return sum(t.numel() for t in (self.prefix_ids, self.chain_ids, self.tail_ids) if t is not None)


def batch_trees(trees: Sequence[Tree], pad_id: int, shared: Sequence[int] | None = None) -> TreeBatch:
    """Right-pad prefixes, chains and tries to common widths; a padding trie node sees only itself.

    `shared[r]` (0 by default) is how many leading chain tokens of row r come from a prefix
    computed once in pass 0 for every row of the batch that starts with those same tokens; it must
    not exceed the tree's `shareable`.
    """
    rows = len(trees)
    lengths = [0] * rows if shared is None else list(shared)
    prefixes: dict[tuple[int, ...], int] = {}
    prefix_rows = []
    for tree, length in zip(trees, lengths, strict=True):
        if length and not 0 < length <= tree.shareable:
            raise ValueError(f"a shared prefix of {length} tokens where the tree allows {tree.shareable}")
        prefix_rows.append(prefixes.setdefault(tree.chain[:length], len(prefixes)) if length else 0)
    prefix_width = max(lengths)
    own_chains = [tree.chain[length:] for tree, length in zip(trees, lengths, strict=True)]
    chain_width = max(len(c) for c in own_chains)
    tail_width = max(len(t.tail_tokens) for t in trees)
    chain_ids = torch.full((rows, chain_width), pad_id, dtype=torch.long)
    chain_keep = torch.zeros((rows, chain_width), dtype=torch.bool)
    tail_ids = torch.full((rows, tail_width), pad_id, dtype=torch.long)
    tail_positions = torch.zeros((rows, tail_width), dtype=torch.long)
    tail_ends = torch.arange(1, tail_width + 1).repeat(rows, 1)  # padding: a one-node subtree
    tail_keep = torch.zeros((rows, tail_width), dtype=torch.bool)
    chain_lengths = torch.tensor([len(c) for c in own_chains])
    prefix_lengths = torch.tensor(lengths)
    for row, (tree, length) in enumerate(zip(trees, lengths, strict=True)):
        chain_ids[row, :len(own_chains[row])] = torch.tensor(own_chains[row])
        if tree.tail_tokens:
            count = len(tree.tail_tokens)
            tail_ids[row, :count] = torch.tensor(tree.tail_tokens)
            tail_positions[row, :count] = torch.tensor(tree.tail_depths)
            tail_ends[row, :count] = torch.tensor(tree.tail_ends)
        for option in tree.scored:
            for node, _ in option:
                if node < len(tree.chain):
                    chain_keep[row, node - length] = True
                else:
                    tail_keep[row, node - len(tree.chain)] = True
    # Row of each kept node in the concatenated logits: pass-1 rows first, both row-major.
    chain_rank = (chain_keep.flatten().cumsum(0) - 1).reshape(rows, chain_width)
    tail_rank = (tail_keep.flatten().cumsum(0) - 1 + int(chain_keep.sum())).reshape(rows, tail_width)
    logit_rows, option_index, slot, targets, sizes = [], [], [], [], []
    for row, (tree, length) in enumerate(zip(trees, lengths, strict=True)):
        chain = len(tree.chain)
        for option in tree.scored:
            for place, (node, token) in enumerate(option):
                rank = chain_rank[row, node - length] if node < chain else tail_rank[row, node - chain]
                logit_rows.append(int(rank))
                option_index.append(len(sizes))
                slot.append(place)
                targets.append(token)
            sizes.append(len(option))
    sees_prefix = torch.arange(prefix_width)[None, :] < prefix_lengths[:, None]  # (rows, prefix width)
    visible = None
    if tail_width:
        chain_slots = torch.arange(chain_width)
        tail_slots = torch.arange(tail_width)
        sees_chain = chain_slots[None, :] < chain_lengths[:, None]
        sees_context = torch.cat([sees_prefix, sees_chain], dim=1)[:, None, :].expand(
            rows, tail_width, prefix_width + chain_width)
        # sees_tail[r, a, b] = b <= a < ends[r, b]
        sees_tail = (tail_slots[None, None, :] <= tail_slots[None, :, None]) & (
            tail_slots[None, :, None] < tail_ends[:, None, :])
        real = tail_slots[None, :] < torch.tensor([len(t.tail_tokens) for t in trees])[:, None]
        sees_context = sees_context & real[:, :, None]  # a padding node sees only itself
        visible = torch.cat([sees_context, sees_tail], dim=2)[:, None]
    prefix: dict[str, torch.Tensor] = {}
    if prefixes:
        prefix_ids = torch.full((len(prefixes), prefix_width), pad_id, dtype=torch.long)
        for tokens, index in prefixes.items():
            prefix_ids[index, :len(tokens)] = torch.tensor(tokens)
        prefix = {
            "prefix_ids": prefix_ids, "prefix_rows": torch.tensor(prefix_rows),
            # Each row sees its own prefix (none: all hidden) and its chain; chain padding lies to the
            # right, where causal attention keeps real positions from looking.
            "chain_mask": torch.cat([sees_prefix, torch.ones(rows, chain_width, dtype=torch.bool)], dim=1).long(),
            "chain_positions": prefix_lengths[:, None] + torch.arange(chain_width)[None, :],
        }
    return TreeBatch(
        chain_ids=chain_ids, chain_keep=chain_keep,
        tail_ids=tail_ids if tail_width else None, tail_positions=tail_positions if tail_width else None,
        tail_visible=visible, tail_keep=tail_keep if tail_width else None,
        logit_rows=torch.tensor(logit_rows), option_index=torch.tensor(option_index), slot=torch.tensor(slot),
        targets=torch.tensor(targets), sizes=sizes, **prefix,
    )
