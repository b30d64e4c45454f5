"""HTTP to an OpenAI-compatible server: JSON requests with retries, many in flight at once.

A long evaluation sends tens of thousands of requests; a server under load answers some with 429
or 503, restarts, or drops a connection, and none of that should end the run. So a request that
fails that way (429, any 5xx, a timeout, a refused or dropped connection) is sent again after an
exponential backoff with full jitter (so many clients do not retry in lockstep), or after the
server's own Retry-After when it gives one. Other answers (400, 401, 404, ...) are not retried:
the same request would fail the same way. When the retries are exhausted the error is one line
naming the URL and the last status.

The API key goes only into the Authorization header; every message this module builds has it
blanked out, in case a server echoes it back.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from harness.errors import HarnessError

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_WAIT_SECONDS = 60.0
"""Longest single wait between attempts, whatever the backoff or a Retry-After says."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ServerClient:
    """POSTs JSON to `base_url` + path from up to `concurrency` threads, retrying what can succeed later.

    `submit` returns a Future of the decoded JSON answer (or of the HarnessError that ended it);
    `backoff` is the first retry's longest wait in seconds, doubled for each later one."""

    def __init__(self, base_url: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0, max_retries: int = 6, backoff: float = 1.0) -> None:
        if concurrency < 1:
            raise HarnessError(f"--concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise HarnessError(f"--max-retries must be 0 or more, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self._secret = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout), limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="harness-http")
        self._random = random.Random()
        self._lock = threading.Lock()
        self.attempts = 0
        """Every HTTP attempt so far, retries included (tests and the benchmark read it)."""

    def url(self, path: str) -> str:
        return self.base_url + path

    def submit(self, path: str, body: dict[str, Any]) -> Future[dict[str, Any]]:
        return self._pool.submit(self.post, path, body)

    def cancel_pending(self) -> None:
        """Drop every submitted request not yet started; those in flight still finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="harness-http")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer to one POST, after as many retries as it takes (at most `max_retries`)."""
        return self._request("POST", path, body)

    def get(self, path: str) -> dict[str, Any] | None:
        """The JSON answer to one GET, or None when the server has no such endpoint (404, 405)."""
        try:
            return self._request("GET", path, None, missing_ok=True)
        except ValueError:  # not JSON: an endpoint of another kind
            return None

    def _request(self, method: str, path: str, body: dict[str, Any] | None,
                 missing_ok: bool = False) -> Any:
        url = self.url(path)
        last = "no answer"
        retry_after: float | None = None  # the server's Retry-After on the last answer, in seconds
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._wait(attempt, retry_after))
                retry_after = None
            with self._lock:
                self.attempts += 1
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                last = f"connection failed or dropped ({type(exc).__name__})"
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    if missing_ok:
                        raise
                    last = "HTTP 200 with a body that is not JSON"
                    continue
            if missing_ok and response.status_code in (404, 405):
                return None
            last = f"HTTP {response.status_code}{self._detail(response)}"
            if response.status_code not in RETRY_STATUSES:
                raise HarnessError(self._hide(f"{method} {url}: {last}; the server refused the request (not "
                                              "retried: it would fail the same way)"))
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        tries = self.max_retries + 1
        raise HarnessError(self._hide(f"{method} {url}: {last} after {tries} attempt{'s' * (tries != 1)}; check "
                                      "that the server is up, then rerun the same command (finished requests are "
                                      "saved and not sent again)"))

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_WAIT_SECONDS)
        with self._lock:
            return self._random.uniform(0, min(self.backoff * 2 ** (attempt - 1), MAX_WAIT_SECONDS))

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        """The server's own error message, its first line and at most 200 characters."""
        try:
            data = response.json()
        except ValueError:
            text = response.text
        else:
            error = data.get("error", data) if isinstance(data, dict) else data
            text = str(error.get("message", error) if isinstance(error, dict) else error)
        text = " ".join(text.split())[:200]
        return f" ({text})" if text else ""

    def _hide(self, message: str) -> str:
        return message.replace(self._secret, "***") if self._secret else message
