"""A backend that runs no model: its answers come from scripts, for dry runs and tests.

`harness run --backend scripted --model NAME` runs the whole pipeline (task loading, prompts,
requests, scoring, the durable sample log, run.json, the tables) with the default scripts: every
generation is empty and rank classification picks the shortest option, deterministically, so a task
file or template can be checked end to end before a model is downloaded. Tests script the answers
to check what the pipeline does with them, and read `.requests` to see what it asked.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from harness.chat import PLAIN, ChatFormat
from harness.engine.base import ChoiceRequest, GenerateRequest, ScoreResult

Request = TypeVar("Request", ChoiceRequest, GenerateRequest)
Answer = TypeVar("Answer")
GenerateScript = Callable[[int, GenerateRequest], str]
ScoreScript = Callable[[int, ChoiceRequest], Sequence[float]]


def minus_lengths(index: int, request: ChoiceRequest) -> list[float]:
    """The default score script: minus each continuation's length in characters."""
    return [-float(len(c)) for c in request.continuations]


class ScriptedBackend:
    """Answers request `index` with `generate(index, request)` or `score(index, request)`.

    `score` gives one log-likelihood per continuation (default: `minus_lengths`); each result counts
    the continuation's characters as its tokens (there is no tokenizer) and is never greedy.
    Requests go out `batch_size` at a time, planned over the whole list as a real backend plans
    them; a request whose index is in `done` is never answered, and a batch left empty is skipped.
    """

    batch_tokens: int | None = None
    truncated = 0  # no tokenizer, no context length: nothing is ever cut

    def __init__(
        self,
        name: str = "scripted",
        *,
        generate: GenerateScript | None = None,
        score: ScoreScript | None = None,
        chat_format: ChatFormat = PLAIN,
        local_path: str | None = None,
        batch_size: int = 8,
        describe_extra: Mapping[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.name = name
        self.chat_format = chat_format
        self.local_path = local_path
        self.batch_size = batch_size
        self.describe_extra = dict(describe_extra or {})
        # Every request this backend was sent, in order (those in `done` included).
        self.requests: list[ChoiceRequest | GenerateRequest] = []
        self._generate = generate or (lambda index, request: "")
        self._score = score or minus_lengths

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "local_path": self.local_path, **self.describe_extra}

    def score(
        self, requests: Sequence[ChoiceRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        self.requests.extend(requests)
        return self._batches(requests, done, self._scored)

    def generate(
        self, requests: Sequence[GenerateRequest], done: Collection[int] = ()
    ) -> Iterator[list[tuple[int, str]]]:
        self.requests.extend(requests)
        return self._batches(requests, done, self._generate)

    def _scored(self, index: int, request: ChoiceRequest) -> tuple[ScoreResult, ...]:
        logprobs = list(self._score(index, request))
        if len(logprobs) != len(request.continuations):
            raise ValueError(f"request {index}: the score script gave {len(logprobs)} log-likelihoods for "
                             f"{len(request.continuations)} continuations")
        pairs = zip(logprobs, request.continuations, strict=True)
        return tuple(ScoreResult(float(logprob), False, len(continuation)) for logprob, continuation in pairs)

    def _batches(self, requests: Sequence[Request], done: Collection[int],
                 answer: Callable[[int, Request], Answer]) -> Iterator[list[tuple[int, Answer]]]:
        skipped = set(done)
        for start in range(0, len(requests), self.batch_size):
            batch = [i for i in range(start, min(start + self.batch_size, len(requests))) if i not in skipped]
            if batch:
                yield [(i, answer(i, requests[i])) for i in batch]
