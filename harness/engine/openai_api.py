"""Backends for a model behind an OpenAI-compatible server (vLLM, SGLang, TGI, llama-cpp-python).

`openai-completions` speaks `/v1/completions`. A choice question is one request per option, the
prompt being context + option, with `echo: true, logprobs: 1, max_tokens: 1`: the server returns
every prompt token's log-probability and where it starts in the text (`text_offset`), and the
option's log-likelihood is the sum over the tokens that start at or after the end of the context,
the ones before the prompt's end (the single generated token is not part of it). That is lm-eval's
`local-completions` sum, with the token boundary read off the offsets rather than from a local
tokenizer; an option is greedy when each of its tokens is the server's top-1 there, as lm-eval reads
it off `top_logprobs`. A server whose answers lack prompt log-probabilities (llama.cpp's own server,
hosted chat APIs) is refused at its first answer, in one line; so is an echo that lacks the one
generated token, which is how llama-cpp-python (0.3.36) answers when its log-probabilities are one
position late (a model that adds no BOS token).

`openai-chat` speaks `/v1/chat/completions` and only generates: chat answers carry no prompt
log-probabilities, so it cannot score options, and a run that selects a choice task is refused
before any request (`refused_kinds`, checked by the runner). The harness renders each prompt in its
plain layout (`chat_format` is PLAIN) and sends it as one user message: the server applies the
model's own chat template, so the prompt is wrapped exactly once. Generations of both endpoints are
greedy (`temperature: 0`), stop at the request's stop strings on the server and are cut at them
again here, as every backend of the harness cuts them.

Requests go out `concurrency` at a time; each answer is saved in the request store as it arrives,
so a run killed mid-way and rerun sends no finished request again, and each sample is yielded the
moment its last answer arrives. A request that fails for good ends the call with its one-line error
only after the requests already in flight have finished and been saved.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from harness.chat import PLAIN
from harness.engine.base import ChoiceRequest, GenerateRequest, ScoreResult
from harness.engine.http_client import ServerClient
from harness.engine.request_store import RequestStore, request_key
from harness.errors import HarnessError

Part = TypeVar("Part")
Answer = TypeVar("Answer")

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
CACHED_BATCH = 256
"""Samples answered wholly from the request store are yielded this many at a time."""


def normalize_base_url(base_url: str | None, flag_backend: str) -> str:
    """The server's root URL: `http://host:8000`, given that, `.../v1`, or a full endpoint URL."""
    if not base_url:
        raise HarnessError(f"--backend {flag_backend} needs --base-url URL (the server's address, e.g. "
                           "http://127.0.0.1:8000)")
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise HarnessError(f"--base-url {base_url}: expected an http:// or https:// URL")
    for suffix in ("/chat/completions", "/completions", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url.rstrip("/")


def read_api_key(variable: str | None) -> str | None:
    """The key from the environment variable named by --api-key-env (the key itself is never a flag)."""
    if not variable:
        return None
    key = os.environ.get(variable)
    if not key:
        raise HarnessError(f"--api-key-env {variable}: that environment variable is not set or empty; export "
                           "it with the server's API key")
    return key


def _lacks(url: str, what: str) -> HarnessError:
    return HarnessError(f"{url}: the server's answer has no prompt log-probabilities ({what}); choice tasks need "
                        "a server that scores the prompt with echo and logprobs (vLLM, llama-cpp-python started "
                        "with --logits_all true), or select only generate tasks")


def continuation_score(response: dict[str, Any], context: str, continuation: str, url: str) -> ScoreResult:
    """The option's log-likelihood, greediness and token count from an echo+logprobs completion."""
    choices = response.get("choices") if isinstance(response, dict) else None
    logprobs = choices[0].get("logprobs") if isinstance(choices, list) and choices else None
    if not isinstance(logprobs, dict):
        raise _lacks(url, "no logprobs in its choice")
    token_logprobs, offsets = logprobs.get("token_logprobs"), logprobs.get("text_offset")
    top = logprobs.get("top_logprobs")
    if not isinstance(token_logprobs, list) or not isinstance(offsets, list) or len(offsets) != len(token_logprobs):
        raise _lacks(url, "no token_logprobs with a text_offset per token")
    end = len(context) + len(continuation)
    if context and not any(offset < len(context) for offset in offsets):
        raise _lacks(url, "the prompt's tokens were not echoed")
    generated = choices[0].get("text")
    generated = generated[end:] if isinstance(generated, str) and len(generated) >= end else None
    if generated != "" and not any(offset >= end for offset in offsets):
        # Asked for one generated token, a correct server echoes the prompt's tokens and then it.
        # llama-cpp-python (0.3.36 and before) leaves it out exactly when the model adds no BOS
        # token, and then scores each prompt token by the distribution after it: every value is
        # one position off (its issue #1983). When the model's next token ends the text (EOS),
        # nothing was generated and none is echoed: that answer is fine as it is.
        raise HarnessError(f"{url}: the server's prompt log-probabilities are misaligned (its echo lacks the one "
                           "generated token, as llama-cpp-python's does for a model that adds no BOS token, each "
                           "token then scored one position late); use vLLM, or a GGUF whose tokenizer adds BOS")
    indices = [i for i, offset in enumerate(offsets) if len(context) <= offset < end]
    if indices and not (isinstance(top, list) and len(top) == len(offsets)):
        raise _lacks(url, "no top_logprobs per token")
    total, greedy = 0.0, True
    for i in indices:
        value, best = token_logprobs[i], top[i]
        if not isinstance(value, (int, float)) or not isinstance(best, dict) or not best:
            raise _lacks(url, f"token {i} of the prompt has none")
        total += value
        if value != max(best.values()):
            greedy = False
    return ScoreResult(float(total), greedy, len(indices))


def cut_at_stops(text: str, stop: Sequence[str]) -> str:
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


class OpenAIBackend:
    """A model served over HTTP: `endpoint` "completions" scores and generates, "chat" only generates."""

    chat_format = PLAIN
    batch_tokens: int | None = None
    truncated = 0  # the server holds the tokenizer; a prompt too long for it is its error, not a cut

    def __init__(self, model: str, *, endpoint: str = "completions", base_url: str | None = None,
                 model_name: str | None = None, concurrency: int = 8, api_key_env: str | None = None,
                 request_timeout: float = 600.0, max_retries: int = 6, backoff: float = 1.0,
                 store: RequestStore | None = None) -> None:
        self.name = f"openai-{endpoint}"
        self.model = model
        self.endpoint = ENDPOINTS[endpoint]
        self.base_url = normalize_base_url(base_url, self.name)
        self.model_name = model_name or model
        self.refused_kinds = {} if endpoint == "completions" else {
            "choice": f"backend {self.name} cannot score options (chat completions return no prompt "
                      "log-probabilities); use --backend openai-completions on the same server, or select only "
                      "generate tasks"}
        """Task kinds this backend cannot answer, with why: the runner refuses them before any request."""
        self.client = ServerClient(self.base_url, api_key=read_api_key(api_key_env), concurrency=concurrency,
                                   timeout=request_timeout, max_retries=max_retries, backoff=backoff)
        self.store = store or RequestStore()
        self._described: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """What answers: the name asked for, the models the server lists, its version (null when it
        reports none, as llama-cpp-python), where and how it is asked. Never the API key."""
        if self._described is None:
            models = self.client.get("/v1/models") or {}
            listed = models.get("data") if isinstance(models, dict) else None
            version = self.client.get("/version")
            self._described = {
                "model": self.model, "backend": self.name, "model_name": self.model_name,
                "server_models": sorted(str(m.get("id")) for m in listed if isinstance(m, dict))
                if isinstance(listed, list) else None,
                "server_version": version.get("version") if isinstance(version, dict) else None,
                "base_url": self.base_url, "endpoint": self.endpoint, "concurrency": self.client.concurrency,
            }
        return dict(self._described)

    def score(self, requests: Sequence[ChoiceRequest],
              done: Collection[int] = ()) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        if self.refused_kinds.get("choice"):
            raise HarnessError(self.refused_kinds["choice"])
        url = self.client.url(self.endpoint)
        jobs = [(i, [self._choice_body(requests[i].context, c) for c in requests[i].continuations])
                for i in range(len(requests)) if i not in done]

        def parse(index: int, part: int, response: dict[str, Any]) -> ScoreResult:
            request = requests[index]
            return continuation_score(response, request.context, request.continuations[part], url)

        return self._answers(jobs, parse, tuple)

    def generate(self, requests: Sequence[GenerateRequest],
                 done: Collection[int] = ()) -> Iterator[list[tuple[int, str]]]:
        url = self.client.url(self.endpoint)
        jobs = [(i, [self._generate_body(requests[i])]) for i in range(len(requests)) if i not in done]

        def parse(index: int, part: int, response: dict[str, Any]) -> str:
            return cut_at_stops(self._generated_text(response, url), requests[index].stop)

        return self._answers(jobs, parse, lambda parts: parts[0])

    def _choice_body(self, context: str, continuation: str) -> dict[str, Any]:
        # max_tokens 1, not 0: llama-cpp-python reads 0 as no limit.
        return {"model": self.model_name, "prompt": context + continuation, "max_tokens": 1, "temperature": 0,
                "logprobs": 1, "echo": True}

    def _generate_body(self, request: GenerateRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": request.max_new_tokens, "temperature": 0}
        if self.endpoint == ENDPOINTS["chat"]:
            body["messages"] = [{"role": "user", "content": request.context}]
        else:
            body["prompt"] = request.context
        stops = [s for s in request.stop if s]
        if stops:
            body["stop"] = stops
        return body

    def _generated_text(self, response: dict[str, Any], url: str) -> str:
        choices = response.get("choices") if isinstance(response, dict) else None
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if first is not None and self.endpoint == ENDPOINTS["chat"]:
            message = first.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            text = "" if isinstance(message, dict) and text is None else text
        else:
            text = first.get("text") if first is not None else None
        if not isinstance(text, str):
            raise HarnessError(f"{url}: the server's answer has no generated text in choices[0]; is it an "
                               f"OpenAI-compatible {self.endpoint} endpoint?")
        return text

    def _answers(self, jobs: list[tuple[int, list[dict[str, Any]]]], parse: Callable[[int, int, dict[str, Any]], Part],
                 combine: Callable[[list[Part]], Answer]) -> Iterator[list[tuple[int, Answer]]]:
        """Each job's answer once all its requests are answered: from the store, else from the server.

        A body sent twice in one call (the same prompt in two samples) goes out once."""
        parts: dict[int, list[Any]] = {index: [None] * len(bodies) for index, bodies in jobs}
        missing: dict[int, int] = {index: len(bodies) for index, bodies in jobs}
        wanted: dict[str, tuple[dict[str, Any], list[tuple[int, int]]]] = {}
        for index, bodies in jobs:
            for part, body in enumerate(bodies):
                key = request_key(self.base_url, self.model_name, self.endpoint, body)
                wanted.setdefault(key, (body, []))[1].append((index, part))

        def fill(key: str, response: dict[str, Any]) -> list[tuple[int, Answer]]:
            finished = []
            for index, part in wanted[key][1]:
                parts[index][part] = parse(index, part, response)
                missing[index] -= 1
                if missing[index] == 0:
                    finished.append((index, combine(parts[index])))
            return finished

        def generator() -> Iterator[list[tuple[int, Answer]]]:
            ready: list[tuple[int, Answer]] = []
            sending = []
            for key in wanted:
                stored = self.store.get(key)
                if stored is None:
                    sending.append(key)
                    continue
                ready += fill(key, stored)
                if len(ready) >= CACHED_BATCH:
                    yield ready
                    ready = []
            if ready:
                yield ready
            yield from self._send(sending, wanted, fill)

        return generator()

    def _send(self, keys: list[str], wanted: dict[str, tuple[dict[str, Any], list[tuple[int, int]]]],
              fill: Callable[[str, dict[str, Any]], list[Any]]) -> Iterator[list[Any]]:
        """Send every request of `keys`, saving and yielding answers as they arrive; the first error
        is raised once the requests in flight have finished."""
        flying: dict[Future[dict[str, Any]], str] = {self.client.submit(self.endpoint, wanted[k][0]): k for k in keys}
        error: HarnessError | None = None
        try:
            while flying:
                arrived, _ = wait(flying, return_when=FIRST_COMPLETED)
                batch = []
                for future in arrived:
                    key = flying.pop(future)
                    try:
                        response = future.result()
                        finished = fill(key, response)
                    except HarnessError as exc:
                        if error is None:
                            error = exc
                            self.client.cancel_pending()
                            # A future cancelled before it started never wakes `wait`: forget it here.
                            for dropped in [f for f in flying if f.cancelled()]:
                                del flying[dropped]
                        continue
                    self.store.put(key, response)
                    batch += finished
                if batch:
                    yield batch
        finally:
            if flying:  # closed early (an interrupt, an error downstream): start nothing more
                self.client.cancel_pending()
        if error is not None:
            raise error
