"""Inference backends behind one small protocol (`Backend`): score continuations, generate text.

`HFBackend` is imported on first use (module `__getattr__`), so importing `harness.engine.base` or
`harness.engine.registry` never pulls in torch and transformers.
"""

from typing import TYPE_CHECKING, Any

from harness.engine.base import Backend, ChoiceRequest, GenerateRequest, ScoreResult

if TYPE_CHECKING:
    from harness.engine.hf import HFBackend

__all__ = ["Backend", "ChoiceRequest", "GenerateRequest", "HFBackend", "ScoreResult"]


def __getattr__(name: str) -> Any:
    if name == "HFBackend":
        from harness.engine.hf import HFBackend

        return HFBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
