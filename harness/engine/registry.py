"""Backends by name, as `harness run --backend NAME` chooses them.

A backend is registered with `@register_backend(name, options=...)` on a factory called as
factory(model, **options) -> Backend, where `model` is the --model value and the options are those
of `harness run`'s backend flags the factory declares it takes (dtype, device, ...). A flag given
with a backend that does not take it is refused in one line instead of ignored (`build_backend`).
The built-in factories import their backend's module only when called, so listing or looking up
backends never imports torch. Other packages
register theirs in a module named by a `harness.plugins` entry point (see `harness.tasks.sources`),
which a lookup of a name not registered here imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from harness.engine.base import Backend
from harness.errors import HarnessError
from harness.plugins import NameRegistry

DEFAULT_BACKEND = "hf"
BackendFactory = Callable[..., Backend]
F = TypeVar("F", bound=BackendFactory)

_BACKENDS: NameRegistry[BackendFactory] = NameRegistry("backend")
_OPTIONS: dict[str, frozenset[str]] = {}


def register_backend(name: str, options: Iterable[str] = ()) -> Callable[[F], F]:
    """Register factory(model: str, **options) -> Backend as the backend `name`; `options` names the
    `harness run` backend flags (as argparse dests: "dtype", "base_url", ...) it takes."""
    _OPTIONS[name] = frozenset(options)
    return _BACKENDS.decorator(name)


def build_backend(name: str, model: str, options: dict[str, Any], defaults: dict[str, Any]) -> Backend:
    """The backend `name` for `model`, given the options it declares. `options` holds every backend
    flag of the command line and `defaults` their unset values: one the backend does not take, set to
    anything but its default, is refused (a --base-url given to the transformers backend would
    otherwise be silently ignored)."""
    factory = get_backend(name)
    accepted = _OPTIONS.get(name, frozenset())
    for option, value in options.items():
        if option not in accepted and value != defaults.get(option):
            flag = "--" + option.replace("_", "-")
            raise HarnessError(f"backend {name!r} does not take {flag}; drop it (`harness run --help` says which "
                               "backend each flag is for)")
    return factory(model, **{option: value for option, value in options.items() if option in accepted})


def backend_names() -> tuple[str, ...]:
    return _BACKENDS.names()


def get_backend(name: str) -> BackendFactory:
    """The factory registered as `name`, or a one-line error listing the known backends."""
    return _BACKENDS.get(name)


@register_backend("hf", options=("dtype", "device", "batch_tokens", "static_cache", "on_overflow", "gguf_file",
                                 "revision", "trust_remote_code", "device_map", "max_memory", "batch_invariant"))
def hf_backend(model: str, **options: Any) -> Backend:
    """A transformers causal LM from a local folder or a hub id (`harness.engine.hf.HFBackend`)."""
    from harness.engine.hf import HFBackend

    return HFBackend(model, **options)


@register_backend("scripted")
def scripted_backend(model: str, **options: Any) -> Backend:
    """A dry run: no model is loaded, `model` is only the name in the run record, every generation is
    empty and rank classification picks the shortest option (`ScriptedBackend`'s default scripts)."""
    from harness.engine.scripted import ScriptedBackend

    return ScriptedBackend(model)


_SERVER_OPTIONS = ("base_url", "model_name", "concurrency", "api_key_env", "request_timeout", "max_retries")


@register_backend("openai-completions", options=_SERVER_OPTIONS)
def openai_completions_backend(model: str, **options: Any) -> Backend:
    """A model behind an OpenAI-compatible server's /v1/completions: scores options from echoed prompt
    log-probabilities and generates (`harness.engine.openai_api`); `model` is the name in the record."""
    from harness.engine.openai_api import OpenAIBackend

    return OpenAIBackend(model, endpoint="completions", **options)


@register_backend("openai-chat", options=_SERVER_OPTIONS)
def openai_chat_backend(model: str, **options: Any) -> Backend:
    """A model behind an OpenAI-compatible server's /v1/chat/completions: generation only, the server
    applying the model's chat template to each prompt sent as one user message."""
    from harness.engine.openai_api import OpenAIBackend

    return OpenAIBackend(model, endpoint="chat", **options)
