"""The processes of a data-parallel `harness run`, started by torchrun or `accelerate launch`.

Such a launcher starts one process per device (on one node or several) and tells each who it is
through the environment: RANK and WORLD_SIZE over the whole job, LOCAL_RANK on its node, and
MASTER_ADDR / MASTER_PORT, where the processes meet. `detect_launch` reads them, `Group` joins
torch.distributed (NCCL on GPUs, gloo for the small objects the ranks exchange, and on CPUs) and
makes the current CUDA device cuda:LOCAL_RANK, so a model loaded on "cuda" lands on the rank's own.

The ranks exchange only decisions and errors, never tensors: what is already done, the record, and
whether every rank got through a step. An error on any rank reaches rank 0, which says it in one
line (naming the rank); the other ranks end quietly, so a job reports a bad flag once, not N times.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

WAIT = timedelta(hours=24)
"""How long a rank waits for the others at a step's end. Ranks take whole batches, so one may finish
its share long before another (torch's default of 10 to 30 minutes would end such an evaluation);
a rank that dies ends the job through the launcher, not through this timeout."""


@dataclass(frozen=True)
class Launch:
    """Who this process is in a data-parallel job."""

    rank: int
    world_size: int
    local_rank: int


def _variable(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name)
    if text is None or not text.strip().isdigit():
        raise HarnessError(f"environment variable {name}={text!r}: WORLD_SIZE says this is one of several "
                           f"processes, which needs {name} as a number; start them with torchrun or accelerate "
                           "launch, or unset WORLD_SIZE")
    return int(text)


def detect_launch(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """This process's place in a job of several, from the launcher's environment; None for a plain
    process (no WORLD_SIZE, or a world of one, which runs exactly as without a launcher)."""
    if environ.get("WORLD_SIZE") is None or _variable(environ, "WORLD_SIZE") <= 1:
        return None
    launch = Launch(_variable(environ, "RANK"), _variable(environ, "WORLD_SIZE"), _variable(environ, "LOCAL_RANK"))
    if launch.rank >= launch.world_size:
        raise HarnessError(f"environment variable RANK={launch.rank} is not below WORLD_SIZE={launch.world_size}; "
                           "start the processes with torchrun or accelerate launch")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(name):
            raise HarnessError(f"environment variable {name} is not set, so the {launch.world_size} processes "
                               "cannot meet; start them with torchrun or accelerate launch")
    return launch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(exc: Exception) -> str:
    """A failed step as rank 0 says it: a HarnessError's own line, else the exception's type and text."""
    return str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {_first_line(exc)}"


class Group:
    """The joined process group of one launch, with the two ways its ranks take a step together."""

    def __init__(self, launch: Launch) -> None:
        import torch
        import torch.distributed as dist

        self.rank, self.world_size = launch.rank, launch.world_size
        self._dist = dist
        cuda = torch.cuda.is_available()
        if cuda:
            count = torch.cuda.device_count()
            if launch.local_rank >= count:
                raise HarnessError(f"environment variable LOCAL_RANK={launch.local_rank}, and this node has {count} "
                                   f"CUDA device(s); start at most {count} processes per node (--nproc_per_node)")
            torch.cuda.set_device(launch.local_rank)
        if not dist.is_initialized():
            try:
                # Object exchanges go through gloo (CPU memory) even beside NCCL.
                dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=WAIT)
            except (RuntimeError, ValueError) as exc:
                raise HarnessError(f"rank {self.rank} of {self.world_size}: cannot join the other processes at "
                                   f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                                   f"({_first_line(exc)}); check that every node can reach it") from None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def silence(self) -> None:
        """For a rank other than 0: log only errors, and no Python warnings (rank 0 says each once)."""
        logging.disable(logging.WARNING)
        warnings.simplefilter("ignore")

    def agree(self, step: Callable[[], T]) -> T:
        """Run `step` on every rank, then wait until every rank has: if one failed, every rank raises
        (rank 0 the one line, naming the rank; a rank whose step failed with a bug re-raises it, so its
        traceback shows)."""
        value: Any = None
        failure, error = None, None
        try:
            value = step()
        except Exception as exc:
            failure, error = _describe(exc), exc
        failures: list[str | None] = [None] * self.world_size
        self._dist.all_gather_object(failures, failure)
        self._raise_first(failures, error)
        return value

    def broadcast(self, step: Callable[[], T]) -> T:
        """Run `step` on rank 0 alone; every rank gets what it returned (or its error, as `agree` raises)."""
        box: list[Any] = [None]
        error = None
        if self.main:
            try:
                box = [(None, step())]
            except Exception as exc:
                error = exc
                box = [(_describe(exc), None)]
        self._dist.broadcast_object_list(box, src=0)
        failure, value = box[0]
        self._raise_first([failure], error)
        return value

    def _raise_first(self, failures: list[str | None], own: Exception | None) -> None:
        failed = [(rank, text) for rank, text in enumerate(failures) if text is not None]
        if not failed:
            return
        if own is not None and not isinstance(own, HarnessError):
            raise own
        rank, text = failed[0]
        raise HarnessError(text if rank == 0 else f"rank {rank} of {self.world_size}: {text}") from None

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()
