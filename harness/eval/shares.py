"""Which requests each process of a data-parallel run computes.

A score may depend on which other requests share its batch (padding, the prefixes a batch computes
once), so ranks never split a batch: each takes whole batches of the plan one process would run, and
passes every other request to the backend as `done`. A backend skips a batch made only of `done`
requests and computes any other exactly as an uninterrupted run does (`harness.engine.base`), so
every rank's numbers are the single process's, bit for bit, and no batch runs twice.

The batches come from the backend's optional `plan_batches(requests)`. A backend without one is
split into contiguous blocks of the requests still to do: still correct by the same rule, and
efficient wherever the backend batches requests in their order (a batch that straddles two blocks
runs on both ranks, each keeping only its own answers).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from harness.engine.base import Backend
from harness.errors import HarnessError


def units(backend: Backend, requests: Sequence[Any], done: Collection[int], world_size: int) -> list[list[int]]:
    """The request lists a rank takes whole: the backend's batches, or contiguous blocks of the rest."""
    plan_batches = getattr(backend, "plan_batches", None)  # optional on a Backend
    if plan_batches is None:
        rest = [i for i in range(len(requests)) if i not in done]
        return [rest[len(rest) * k // world_size: len(rest) * (k + 1) // world_size] for k in range(world_size)]
    batches = [list(batch) for batch in plan_batches(requests)]
    covered = sorted(i for batch in batches for i in batch)
    if covered != list(range(len(requests))):
        raise HarnessError(f"backend {type(backend).__name__}: plan_batches did not give each of the {len(requests)} "
                           "requests exactly one batch; run it in one process (without torchrun)")
    return batches


def my_share(unit_lists: Sequence[Sequence[Sequence[int]]], done: Sequence[Collection[int]], rank: int,
             world_size: int) -> list[set[int]]:
    """The requests of each list that `rank` computes: the units still holding work to do, dealt out
    round robin in plan order, the count running on from one list to the next (so two lists of one
    batch each go to two ranks). Every rank computes the same deal from the same `done`."""
    dealt = 0
    shares = []
    for lists, skipped in zip(unit_lists, done, strict=True):
        mine: set[int] = set()
        for unit in lists:
            rest = [i for i in unit if i not in skipped]
            if not rest:
                continue
            if dealt % world_size == rank:
                mine.update(rest)
            dealt += 1
        shares.append(mine)
    return shares
