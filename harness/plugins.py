"""Extension points found by name, and the plugins that fill them.

Metrics (`harness.metrics`), row loaders and generators (`harness.tasks.sources`) and backends
(`harness.engine.registry`) are each a `NameRegistry`: the functions behind the names live in
`harness.benchmarks`, in engine modules or in other packages, and register themselves with a
decorator when their module is imported, so a registry holds only names and never imports a
benchmark or a backend up front. A lookup that misses imports the plugins once per process
(`load_plugins`: the built-in modules of BUILTIN_PLUGINS, then every entry point of the group
PLUGIN_GROUP) and looks again.

A third-party package adds its own by declaring, in its pyproject.toml,
`[project.entry-points."harness.plugins"] NAME = "its.module"`: importing that module registers
whatever it decorates.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from harness.errors import HarnessError

PLUGIN_GROUP = "harness.plugins"
BUILTIN_PLUGINS = ("harness.benchmarks",)
"""The built-in plugin modules (a package imports its submodules in its `__init__`)."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_plugins_loaded = False


def load_plugins() -> None:
    """Import the built-in plugin modules and every `harness.plugins` entry point, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    from importlib.metadata import entry_points  # 80 ms to import; most runs never get here

    _plugins_loaded = True  # before importing: a plugin that looks a name up while it loads must not recurse
    try:
        for module in BUILTIN_PLUGINS:
            importlib.import_module(module)
        for entry in entry_points(group=PLUGIN_GROUP):
            try:
                entry.load()
            except Exception as exc:  # whatever a third-party import raises, the user needs one line
                reason = (str(exc).strip().splitlines() or [""])[0]
                raise HarnessError(f"plugin {entry.name!r} ({entry.value}, entry point group {PLUGIN_GROUP}) "
                                   f"failed to import: {type(exc).__name__}: {reason}") from exc
    except BaseException:
        _plugins_loaded = False  # a fixed environment gets another try
        raise


class NameRegistry(Generic[T]):
    """Entries under unique names, in registration order; a lookup that misses loads the plugins.

    A name is taken once: a second registration from another function is refused, so a plugin never
    silently replaces a built-in metric or loader (re-registering the same function, as a module
    imported twice does, is allowed).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, entry: T, function: Callable[..., Any]) -> None:
        origin = f"{function.__module__}:{function.__qualname__}"
        if self._origins.get(name, origin) != origin:
            raise HarnessError(f"{self.what} {name!r} is registered twice ({self._origins[name]} and {origin}); "
                               "give one of them another name")
        self._entries[name] = entry
        self._origins[name] = origin

    def decorator(self, name: str) -> Callable[[F], F]:
        """A decorator registering the function itself as the entry `name`."""

        def add(function: F) -> F:
            self.add(name, function, function)  # type: ignore[arg-type]
            return function

        return add

    def entries(self) -> dict[str, T]:
        """Every entry, the plugins' included."""
        load_plugins()
        return dict(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries())

    def lookup(self, name: str) -> T | None:
        if name not in self._entries:
            load_plugins()
        return self._entries.get(name)

    def get(self, name: str) -> T:
        """The entry `name`, or a one-line error listing the known names."""
        entry = self.lookup(name)
        if entry is None:
            raise HarnessError(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._entries))}")
        return entry
