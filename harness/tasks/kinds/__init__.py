"""Task kinds: what differs between a `choice` task and a `generate` task, one object per kind.

A kind parses its own fields of a task file, renders a row into what is shown and what is right,
turns a rendered row into a backend request, and scores the backend's answer. Everything else
(planning, storage, aggregation) is the same for every kind, so a new kind (a rolling
log-likelihood, a judged generation) is one new module in this package, registered with
`@register_kind`: modules here are found and imported on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from harness.tasks.kinds.base import TaskKind

_KINDS: dict[str, TaskKind] = {}
_discovered = False


def register_kind(name: str) -> Callable[[type[TaskKind]], type[TaskKind]]:
    """Class decorator: make a TaskKind subclass available under `kind: NAME` in task files."""

    def add(cls: type[TaskKind]) -> type[TaskKind]:
        instance = cls()
        instance.name = name
        _KINDS[name] = instance
        return cls

    return add


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
            importlib.import_module(f"{__name__}.{module}")
        _discovered = True


def kind_names() -> tuple[str, ...]:
    _discover()
    return tuple(sorted(_KINDS))


def get_kind(name: str) -> TaskKind:
    """The kind registered as `name`; callers check `name in kind_names()` first for a clear error."""
    _discover()
    return _KINDS[name]


__all__ = ["TaskKind", "get_kind", "kind_names", "register_kind"]
