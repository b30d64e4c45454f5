"""A small OpenAI-compatible server on a loopback port, with exact answers and injectable faults.

Its tokenizer splits text into runs of whitespace followed by non-whitespace ("The", " cat", ...);
a token's log-probability is -0.5 per non-space character (exact in binary, so expected sums are
exact), and the top-1 token is the token itself when it has one character, else "x" at -0.5, so a
token is greedy exactly when it is one character long. The first prompt token has no
log-probability, as OpenAI-style servers answer. A generation is " N words." followed by "\\n" and
more text, N being the prompt's token count, so stop strings have something to cut.

`state` steers it: `script` (one fault per POST, consumed in order: "429:SECONDS" answers 429 with
that Retry-After, "500", "drop" closes the connection unanswered), `broken_after` (after that many
answered POSTs every POST gets `broken_status`), `logprobs` (False: answers carry none, as llama.cpp's
own server), `shifted` (the echo lacks the generated token, as llama-cpp-python's when its
log-probabilities are one position off), `delay` (seconds per answer), `echo_auth` (a 401 quoting
the Authorization header). It records every answered POST body, the attempts, the Authorization
headers and how many requests were in flight at most.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def toy_tokens(text: str) -> list[str]:
    tokens = re.findall(r"\s*\S+|\s+", text)
    assert "".join(tokens) == text
    return tokens


def toy_logprob(token: str) -> float:
    return -0.5 * max(1, len(token.strip()))


def toy_top(token: str) -> dict[str, float]:
    return {token: toy_logprob(token)} if len(token.strip()) <= 1 else {"x": -0.5}


def toy_generation(prompt: str) -> str:
    return f" {len(toy_tokens(prompt))} words.\nmore text"


GENERATED = " end"


@dataclass
class State:
    script: list[str] = field(default_factory=list)
    broken_after: int | None = None
    broken_status: int = 500
    logprobs: bool = True
    shifted: bool = False
    ends: bool = False  # the model's next token is EOS: nothing generated, nothing echoed after the prompt
    delay: float = 0.0
    echo_auth: bool = False
    answered: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    gets: int = 0
    authorization: set[str] = field(default_factory=set)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: bytes,
              headers: dict[str, str] | None = None) -> None:
    """One JSON answer with its length, as every OpenAI-compatible server sends it (shared with the proxy)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


def completion(body: dict[str, Any], logprobs: bool, shifted: bool = False, ends: bool = False) -> dict[str, Any]:
    prompt = body["prompt"]
    if not body.get("echo"):
        return {"model": "toy-model", "choices": [{"index": 0, "text": toy_generation(prompt), "logprobs": None}]}
    tokens = toy_tokens(prompt) + ([] if shifted or ends else [GENERATED])
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    answer: dict[str, Any] = {"index": 0, "text": prompt + ("" if ends else GENERATED), "logprobs": None}
    if logprobs:
        answer["logprobs"] = {
            "tokens": tokens, "text_offset": offsets,
            "token_logprobs": [None] + [toy_logprob(t) for t in tokens[1:]],
            "top_logprobs": [None] + [toy_top(t) for t in tokens[1:]],
        }
    return {"model": "toy-model", "choices": [answer]}


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    content = toy_generation(body["messages"][-1]["content"])
    return {"model": "toy-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        send_json(self, status, json.dumps(data).encode(), headers)

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.gets += 1
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "toy-model", "object": "model"}]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        state = self.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        with state.lock:
            state.attempts += 1
            state.authorization.add(self.headers.get("Authorization", ""))
            fault = state.script.pop(0) if state.script else None
            broken = state.broken_after is not None and len(state.answered) >= state.broken_after
            state.active += 1
            state.max_active = max(state.max_active, state.active)
        try:
            time.sleep(state.delay)
            if state.echo_auth:
                return self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
            if fault == "drop":
                self.close_connection = True
                return
            if fault is not None and fault.startswith("429"):
                return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": fault.split(":")[1]})
            if fault == "500" or broken:
                return self._send(500 if fault == "500" else state.broken_status, {"error": {"message": "overloaded"}})
            if self.path == "/v1/completions":
                answer = completion(body, state.logprobs, state.shifted, state.ends)
            elif self.path == "/v1/chat/completions":
                answer = chat_completion(body)
            else:
                return self._send(404, {"detail": "Not Found"})
            with state.lock:
                state.answered.append(body)
            self._send(200, answer)
        finally:
            with state.lock:
                state.active -= 1


class FakeServer:
    """The server running on 127.0.0.1 in a background thread until `close`."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
