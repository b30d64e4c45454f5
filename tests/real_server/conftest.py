"""A real llama-cpp-python server on a loopback port, serving SmolLM2 from a GGUF that adds BOS.

The tests skip, saying why, only where llama-cpp-python is not installed and HARNESS_REQUIRE_SERVER
is unset; CI sets it (and installs the package), so a missing install fails there instead.

The GGUF served is a copy of the real model's with `tokenizer.ggml.add_bos_token` set: for a model
that adds no BOS token, llama-cpp-python (0.3.36) echoes each prompt token's log-probability from
the distribution after it, one position late (the backend refuses such answers). With BOS added it
scores every token from the distribution before it, as it should, and the transformers side is given
the same BOS at the start of each context.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.real_model.fetch import RealModel
from tests.real_model.fetch import real_model as fetch_real_model

STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1:`port`, started, killed and restarted by the tests."""

    def __init__(self, gguf: Path, log: Path) -> None:
        self.gguf = gguf
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--logits_all", "true",
                   "--n_ctx", "2048", "--n_threads", "2", "--port", str(self.port), "--host", "127.0.0.1"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the llama-cpp-python server exited with {self.process.returncode}; its log: "
                            f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"the llama-cpp-python server did not answer within {STARTUP_SECONDS} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill ends it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _require_server() -> None:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        if os.environ.get("HARNESS_REQUIRE_SERVER"):
            pytest.fail("HARNESS_REQUIRE_SERVER is set but llama-cpp-python[server] is not installed (.ci/run "
                        "installs it)")
        pytest.skip("llama-cpp-python[server] is not installed (set HARNESS_REQUIRE_SERVER=1 to make this a failure)")


@pytest.fixture(scope="session")
def real_model() -> RealModel:
    _require_server()
    model, why = fetch_real_model()
    if model is None:
        pytest.skip(f"the real model is not available: {why}")
    return model


@pytest.fixture(scope="session")
def bos_gguf(real_model: RealModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real GGUF whose tokenizer adds BOS (the only field changed)."""
    from gguf import GGUFReader

    path = tmp_path_factory.mktemp("gguf") / real_model.gguf.name
    shutil.copyfile(real_model.gguf, path)
    reader = GGUFReader(path, "r+")
    field = reader.get_field("tokenizer.ggml.add_bos_token")
    assert field is not None and not field.parts[field.data[0]][0]
    field.parts[field.data[0]][0] = True
    reader.data.flush()
    del reader
    return path


@pytest.fixture(scope="session")
def llama_server(bos_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    server = LlamaServer(bos_gguf, tmp_path_factory.mktemp("server") / "server.log")
    server.start()
    yield server
    server.stop()
