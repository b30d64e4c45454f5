"""Shared fixtures: an offline environment and the built-in tiny models in a per-session cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"tiny-llama": path, "tiny-llama-chat": path}, built once into a session-private cache."""
    from harness.builtin.tiny_models import builtin_models

    cache = tmp_path_factory.mktemp("harness-cache")
    previous = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(cache)
    try:
        return builtin_models()
    finally:
        if previous is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = previous


@pytest.fixture(scope="session")
def plain_backend(tiny_models: dict[str, Path]):
    from harness.engine import HFBackend

    return HFBackend(str(tiny_models["tiny-llama"]), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def chat_backend(tiny_models: dict[str, Path]):
    from harness.engine import HFBackend

    return HFBackend(str(tiny_models["tiny-llama-chat"]), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Matrices this small gain nothing from threads, while two OpenMP threads on a busy 2-core
    machine can spin-wait for seconds per call (seen: 14 s -> 2 min for the parity tests)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def collect(batches) -> dict:
    """A backend's batch-by-batch results as {request index: result}, each index exactly once."""
    results = {}
    for batch in batches:
        for index, value in batch:
            assert index not in results, "every request is answered exactly once"
            results[index] = value
    return results
