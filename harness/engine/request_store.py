"""Every answer an inference server gave, kept on disk as it arrives, so a killed run never asks twice.

The runner already resumes by sample: a finished sample is on disk and is not asked again. A server
backend works at a finer grain (a choice question is one request per option, and many requests are
in flight at once), so a run killed mid-way would lose every answer of the samples it had not
finished. This store keeps each answer the moment it arrives, keyed by a hash of what determines it
(base URL, model name, endpoint and the exact request body), and the rerun finds it there.

It is one sqlite file under the harness cache (stdlib, one transaction per answer, written only by
the thread that collects the answers). WAL journaling makes each commit survive the process being
killed; only the machine losing power could drop the last few.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import cache_root


def default_store_path() -> Path:
    return cache_root() / "server-requests.sqlite"


def request_key(base_url: str, model: str, endpoint: str, body: dict[str, Any]) -> str:
    """The sha256 of what determines a server's answer to one request (never the API key)."""
    identity = {"base_url": base_url.rstrip("/"), "model": model, "endpoint": endpoint, "body": body}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class RequestStore:
    """Answers by request key: `get` one already received, `put` one as it arrives (committed at once)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise HarnessError(f"{self.path}: cannot open the request store ({exc}); set HARNESS_CACHE to a "
                               "writable folder") from None

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT response FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO answers (key, response) VALUES (?, ?)",
                                 (key, json.dumps(response, ensure_ascii=False)))
        except sqlite3.Error as exc:
            raise HarnessError(f"{self.path}: cannot save a server answer ({exc}); free disk space or set "
                               "HARNESS_CACHE to a writable folder, then rerun the same command") from None
