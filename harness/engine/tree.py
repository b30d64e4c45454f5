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

Everything here is plain Python and torch on the CPU with no model, so it can be tested in
isolation, and the device receives finished tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


def common_prefix_length(windows: Sequence[Sequence[int]], known: int = 0) -> int:
    """Length of the prefix all windows share, given that they share the first `known` tokens."""
    shortest = min(len(w) for w in windows)
    first = windows[0]
    for position in range(known, shortest):
        token = first[position]
        if any(w[position] != token for w in windows):
            return position
    return shortest


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

    Pass 1 reads `chain_ids`; pass 2 (absent when no tree has a trie node) reads `tail_ids`,
    `tail_positions` and `tail_visible` (query trie node -> key: chain slots, then trie slots).
    `chain_keep` / `tail_keep` mark the nodes whose logits are needed, each once however many
    options read it. For the k-th scored token overall (options of all trees in order, tokens in
    order): `logit_rows[k]` is its row in cat(pass-1 logits, pass-2 logits), `option_index[k]`
    its option's index, `slot[k]` its place in the option, `targets[k]` the token.
    """

    chain_ids: torch.Tensor
    chain_keep: torch.Tensor
    tail_ids: torch.Tensor | None
    tail_positions: torch.Tensor | None
    tail_visible: torch.Tensor | None  # (rows, 1, tail width, chain width + tail width) bool
    tail_keep: torch.Tensor | None
    logit_rows: torch.Tensor
    option_index: torch.Tensor
    slot: torch.Tensor
    targets: torch.Tensor
    sizes: list[int]  # tokens per option

    @property
    def positions(self) -> int:
        """Token positions the model computes for this batch, padding included."""
        return self.chain_ids.numel() + (self.tail_ids.numel() if self.tail_ids is not None else 0)


def batch_trees(trees: Sequence[Tree], pad_id: int) -> TreeBatch:
    """Right-pad chains and tries to common widths; a padding trie node sees only itself."""
    rows = len(trees)
    chain_width = max(len(t.chain) for t in trees)
    tail_width = max(len(t.tail_tokens) for t in trees)
    chain_ids = torch.full((rows, chain_width), pad_id, dtype=torch.long)
    chain_keep = torch.zeros((rows, chain_width), dtype=torch.bool)
    tail_ids = torch.full((rows, tail_width), pad_id, dtype=torch.long)
    tail_positions = torch.zeros((rows, tail_width), dtype=torch.long)
    tail_ends = torch.arange(1, tail_width + 1).repeat(rows, 1)  # padding: a one-node subtree
    tail_keep = torch.zeros((rows, tail_width), dtype=torch.bool)
    chain_lengths = torch.tensor([len(t.chain) for t in trees])
    for row, tree in enumerate(trees):
        chain_ids[row, :len(tree.chain)] = torch.tensor(tree.chain)
        if tree.tail_tokens:
            count = len(tree.tail_tokens)
            tail_ids[row, :count] = torch.tensor(tree.tail_tokens)
            tail_positions[row, :count] = torch.tensor(tree.tail_depths)
            tail_ends[row, :count] = torch.tensor(tree.tail_ends)
        for option in tree.scored:
            for node, _ in option:
                if node < len(tree.chain):
                    chain_keep[row, node] = True
                else:
                    tail_keep[row, node - len(tree.chain)] = True
    # Row of each kept node in the concatenated logits: pass-1 rows first, both row-major.
    chain_rank = (chain_keep.flatten().cumsum(0) - 1).reshape(rows, chain_width)
    tail_rank = (tail_keep.flatten().cumsum(0) - 1 + int(chain_keep.sum())).reshape(rows, tail_width)
    logit_rows, option_index, slot, targets, sizes = [], [], [], [], []
    for row, tree in enumerate(trees):
        chain = len(tree.chain)
        for option in tree.scored:
            for place, (node, token) in enumerate(option):
                rank = chain_rank[row, node] if node < chain else tail_rank[row, node - chain]
                logit_rows.append(int(rank))
                option_index.append(len(sizes))
                slot.append(place)
                targets.append(token)
            sizes.append(len(option))
    visible = None
    if tail_width:
        chain_slots = torch.arange(chain_width)
        tail_slots = torch.arange(tail_width)
        sees_chain = (chain_slots[None, :] < chain_lengths[:, None])[:, None, :].expand(rows, tail_width, chain_width)
        # sees_tail[r, a, b] = b <= a < ends[r, b]
        sees_tail = (tail_slots[None, None, :] <= tail_slots[None, :, None]) & (
            tail_slots[None, :, None] < tail_ends[:, None, :])
        real = tail_slots[None, :] < torch.tensor([len(t.tail_tokens) for t in trees])[:, None]
        sees_chain = sees_chain & real[:, :, None]  # a padding node sees only itself
        visible = torch.cat([sees_chain, sees_tail], dim=2)[:, None]
    return TreeBatch(
        chain_ids=chain_ids, chain_keep=chain_keep,
        tail_ids=tail_ids if tail_width else None, tail_positions=tail_positions if tail_width else None,
        tail_visible=visible, tail_keep=tail_keep if tail_width else None,
        logit_rows=torch.tensor(logit_rows), option_index=torch.tensor(option_index), slot=torch.tensor(slot),
        targets=torch.tensor(targets), sizes=sizes,
    )
