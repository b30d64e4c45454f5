"""The small protocol every inference backend implements.

Backends yield results batch by batch (with the index of the request each answers), so the runner
can write every finished sample durably before the next batch starts: a crash loses at most one
batch of work. Requests a resumed run already has are passed as `done`; a backend skips every batch
made only of those, and plans its batches over the whole list so the rest are computed exactly as
an uninterrupted run computes them.
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
        """Yield, batch by batch, (request index, generated text cut at the first stop string)."""
        ...
