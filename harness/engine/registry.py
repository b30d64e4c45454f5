"""Backends by name, as `harness run --backend NAME` chooses them.

A backend is registered with `@register_backend(name)` on a factory called as
factory(model, **options) -> Backend, where `model` is the --model value and the options are the
run's dtype, device, batch_tokens and static_cache. The built-in factories import their backend's
module only when called, so listing or looking up backends never imports torch. Other packages
register theirs in a module named by a `harness.plugins` entry point (see `harness.tasks.sources`),
which a lookup of a name not registered here imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from harness.engine.base import Backend
from harness.errors import HarnessError
from harness.plugins import NameRegistry

DEFAULT_BACKEND = "hf"
BackendFactory = Callable[..., Backend]
F = TypeVar("F", bound=BackendFactory)

_BACKENDS: NameRegistry[BackendFactory] = NameRegistry("backend")


def register_backend(name: str) -> Callable[[F], F]:
    """Register factory(model: str, **options) -> Backend as the backend `name`."""
    return _BACKENDS.decorator(name)


def backend_names() -> tuple[str, ...]:
    return _BACKENDS.names()


def get_backend(name: str) -> BackendFactory:
    """The factory registered as `name`, or a one-line error listing the known backends."""
    return _BACKENDS.get(name)


@register_backend("hf")
def hf_backend(model: str, **options: Any) -> Backend:
    """A transformers causal LM from a local folder or a hub id (`harness.engine.hf.HFBackend`)."""
    from harness.engine.hf import HFBackend

    return HFBackend(model, **options)


# The options `harness run` passes to every backend, at the values it passes when their flags are
# not given: a backend that runs no model takes them at these values and refuses any other.
_NO_MODEL_OPTIONS = {"dtype": "auto", "device": None, "batch_tokens": 4096, "static_cache": False,
                     "on_overflow": "truncate"}


@register_backend("scripted")
def scripted_backend(model: str, **options: Any) -> Backend:
    """A dry run: no model is loaded, `model` is only the name in the run record, every generation is
    empty and rank classification picks the shortest option (`ScriptedBackend`'s default scripts)."""
    from harness.engine.scripted import ScriptedBackend

    for option, value in options.items():
        if option not in _NO_MODEL_OPTIONS or value != _NO_MODEL_OPTIONS[option]:
            flag = "--" + option.replace("_", "-")
            raise HarnessError(f"backend 'scripted' runs no model, so {flag} does not apply; drop it")
    return ScriptedBackend(model)
