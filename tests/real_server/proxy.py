"""A loopback proxy in front of a real server: it counts what the server answered and injects faults.

`script` holds one fault per POST, consumed in order ("429:SECONDS" answers 429 with that
Retry-After, "500" answers 500), and the rest are forwarded. `answered` keeps every POST body the
server answered with 200; `on_answer(count)` runs after each (a test kills the server from it). An
upstream that cannot be reached is answered 502, as a load balancer in front of a dead server does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.fake_openai_server import send_json


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: list[str] = []
        self.answered: list[dict[str, Any]] = []
        self.faults = 0
        self.on_answer: Callable[[int], None] | None = None
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=300)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                send_json(self, status, payload, headers)

            def forward(self, method: str, body: bytes | None) -> httpx.Response | None:
                try:
                    return proxy.client.request(method, proxy.upstream + self.path, content=body,
                                                headers={"Content-Type": "application/json"})
                except httpx.TransportError:
                    self.reply(502, b'{"error": {"message": "upstream unreachable"}}')
                    return None

            def do_GET(self) -> None:
                response = self.forward("GET", None)
                if response is not None:
                    self.reply(response.status_code, response.content)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with proxy.lock:
                    fault = proxy.script.pop(0) if proxy.script else None
                if fault is not None:
                    with proxy.lock:
                        proxy.faults += 1
                    if fault.startswith("429"):
                        return self.reply(429, b'{"error": {"message": "busy"}}', {"Retry-After": fault.split(":")[1]})
                    return self.reply(500, b'{"error": {"message": "injected"}}')
                response = self.forward("POST", body)
                if response is None:
                    return
                if response.status_code == 200:
                    with proxy.lock:
                        proxy.answered.append(json.loads(body))
                        count = len(proxy.answered)
                    if proxy.on_answer is not None:
                        proxy.on_answer(count)
                self.reply(response.status_code, response.content)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()
