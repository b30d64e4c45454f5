"""The small protocol every inference backend implements.

Backends yield results batch by batch (with the index of the request each answers), so the runner
can write every finished sample durably before the next batch starts: a crash loses at most one
batch of work. A backend may yield finer than its batches (the transformers backend's greedy loop
yields each generation as its row finishes), so a crash loses only what was still in flight.
Requests a resumed run already has are passed as `done`; a backend skips every batch made only of
those, and plans its batches over the whole list so the rest are computed exactly as an
uninterrupted run computes them. A backend may also offer `plan_batches(requests)`: the batches, as
lists of request indices, that `score` or `generate` would run the list in, computing nothing; a
data-parallel run then gives each process whole batches (`harness.eval.shares`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.chat import ChatFormat


@dataclass(frozen=True)
class ChoiceRequest:
    """Log-likelihood of each continuation given one shared context (plain text)."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ScoreResult:
    logprob: float
    is_greedy: bool
    num_tokens: int


@dataclass(frozen=True)
class GenerateRequest:
    """Greedy generation from `context` until a stop string or `max_new_tokens`."""

    context: str
    max_new_tokens: int
    stop: tuple[str, ...]


class Backend(Protocol):
    chat_format: ChatFormat
    """How this model's chat messages become text (its tokenizer's chat template, or none)."""
    batch_tokens: int | None
    """Padded tokens per batch, for the run spec (None where the backend has no such budget)."""
    truncated: int
    """Optional (read it as `getattr(backend, "truncated", 0)`): how many requests had their prompt
    cut to fit the model's context, summed over every `score` and `generate` call of this backend so
    far. A call counts its whole request list, those in `done` included (a resumed run counts what an
    uninterrupted one does), when its first batch is asked for; so a runner reads it before and after
    exhausting a run's calls and keeps the difference (a backend may serve several runs)."""

    def describe(self) -> dict[str, Any]:
        """Model, tokenizer, weights hash, dtype and device, for the run record."""
        ...


    def score(
        self, requests: Sequence[ChoiceRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        """Yield, batch by batch, (request index, one result per continuation)."""
        ...

    def generate(
        self, requests: Sequence[GenerateRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, str]]]:
        """Yield, batch by batch or as requests finish, (request index, generated text cut at the
        first stop string)."""
        ...
