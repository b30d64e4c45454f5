"""Running a batch so that running out of accelerator memory splits it instead of ending the run.

A batch planned by token budget can still not fit (a long generation's cache, another process on
the same GPU). Halving it and retrying loses no request and changes results only by the float
rounding of a different padding, so a backend retries rather than failing hours into a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def with_oom_backoff(indices: list[int], run: Callable[[list[int]], list[T]], device: torch.device) -> list[T]:
    """`run(indices)`; on out-of-memory, the same over halves of the batch, their results joined."""
    parts = stream_with_oom_backoff(indices, lambda batch: iter([run(batch)]), device)
    return [result for part in parts for result in part]


def stream_with_oom_backoff(
    indices: list[int], run: Callable[[list[int]], Iterator[list[tuple[int, T]]]], device: torch.device,
) -> Iterator[list[tuple[int, T]]]:
    """Yield what `run(indices)` yields, (request index, result) lists as requests finish; on
    out-of-memory, rerun only the requests not yet yielded, in halves, so none is lost or repeated."""
    handed_out: set[int] = set()
    try:
        for part in run(indices):
            handed_out.update(index for index, _ in part)
            yield part
        return
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_oom(exc) or len(indices) == 1:
            raise
    # Retried after the except block, so the failed attempt's frames (and the tensors they hold) are freed.
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rest = [index for index in indices if index not in handed_out]
    half = max(len(rest) // 2, 1)
    parts = [part for part in (rest[:half], rest[half:]) if part]
    log.warning("out of memory on a batch of %d; retrying %s", len(indices), " + ".join(str(len(p)) for p in parts))
    for part in parts:
        yield from stream_with_oom_backoff(part, run, device)
