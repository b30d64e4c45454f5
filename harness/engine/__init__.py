"""Inference backends behind one small protocol (`Backend`): score continuations, generate text."""

from harness.engine.base import Backend, ChoiceRequest, GenerateRequest, ScoreResult
from harness.engine.hf import HFBackend

__all__ = ["Backend", "ChoiceRequest", "GenerateRequest", "HFBackend", "ScoreResult"]
