"""Where a task's rows come from by name: row loaders and row generators.

A task file names them (`data: {loader: NAME}` or `data: {generator: NAME}`); the functions live in
`harness.benchmarks` or in other packages, above this layer, and register themselves in these
`NameRegistry`s (`harness.plugins`), which import them only when a name is looked up.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from harness.plugins import NameRegistry
from harness.tasks.schema import Task

Row = dict[str, Any]
RowLoader = Callable[[Task, str, Path | None], list[Row]]
RowGenerator = Callable[[random.Random, int], list[Row]]
F = TypeVar("F", bound=Callable[..., Any])


_LOADERS: NameRegistry[RowLoader] = NameRegistry("loader")
_GENERATORS: NameRegistry[RowGenerator] = NameRegistry("generator")


def register_loader(name: str) -> Callable[[F], F]:
    """Register fn(task, split, folder) -> rows as the loader `data: {loader: NAME}` names.

    `folder` is the local folder a run pointed the task at (--data, --data-dir), or None: then the
    loader uses its own default or the hub. Options come from the task file's `data.options`.
    """
    return _LOADERS.decorator(name)


def register_generator(name: str) -> Callable[[F], F]:
    """Register fn(rng, n) -> n rows as the generator `data: {generator: NAME}` names (see `generate_rows`)."""
    return _GENERATORS.decorator(name)


def loader_names() -> tuple[str, ...]:
    return _LOADERS.names()


def generator_names() -> tuple[str, ...]:
    return _GENERATORS.names()


def get_loader(name: str) -> RowLoader:
    return _LOADERS.get(name)


def get_generator(name: str) -> RowGenerator:
    return _GENERATORS.get(name)


def generate_rows(name: str, seed: int, split: str, n: int) -> list[Row]:
    """n rows of generator `name` for `split`, each with its position as `idx`.

    The generator's random stream is seeded from the string "seed:name:split" (string seeds hash
    with SHA-512, so rows do not depend on PYTHONHASHSEED or the platform), so splits never share a
    stream and adding a generator never changes the rows of another.
    """
    if n < 0:
        raise ValueError(f"row count for generator {name!r} must be >= 0, got {n}")
    rows = get_generator(name)(random.Random(f"{seed}:{name}:{split}"), n)
    for i, row in enumerate(rows):
        row["idx"] = i
    return rows
