"""The project's one Jinja environment: sandboxed, strict, and with promptsource's extras.

Every template (task files, template files, imported promptsource templates) is parsed and rendered
in an environment made here, so a template renders the same wherever it is used. promptsource's
extras (`zip`, the `choice` and `most_frequent` filters) are always present, so imported templates
render as written; `choice` is seeded by the row's content (see `seeded_choice`).
"""

from __future__ import annotations

import hashlib
import json
import random
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import jinja2
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment


def make_environment() -> SandboxedEnvironment:
    """The project's Jinja environment: sandboxed, strict, whitespace kept exactly as written."""
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False, cache_size=0)
    # promptsource's helpers (choice, most_frequent, zip), so imported templates render as written.
    return add_jinja_extras(env)


# -- promptsource's Jinja extras ------------------------------------------------------------------

_draw_counts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _row_fingerprint(context: jinja2.runtime.Context) -> str:
    """A stable digest of the values a template was rendered with (the row, and options if any)."""
    values = {k: v for k, v in context.parent.items() if k not in context.environment.globals}
    text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@jinja2.pass_context
def seeded_choice(context: jinja2.runtime.Context, items: Iterable[Any]) -> Any:
    """promptsource's `choice` filter with the draw made reproducible.

    promptsource calls `random.choice`, so a prompt differed on every rendering. Here the draw is
    seeded by the row's content and by how many draws the same rendering made before, so rows still
    get different draws while one row renders identically every time.
    """
    population = list(items)
    if not population:
        raise jinja2.TemplateRuntimeError("the choice filter got an empty sequence")
    draw = _draw_counts.get(context, 0)
    _draw_counts[context] = draw + 1
    return random.Random(f"{_row_fingerprint(context)}:{draw}").choice(population)


def most_frequent(items: Iterable[Any]) -> list[Any] | None:
    """promptsource's `most_frequent` filter: every item tied for the highest count, in first-seen order."""
    counts = Counter(items).most_common()
    if not counts:
        return None
    top = counts[0][1]
    return [item for item, count in counts if count == top]


JINJA_FILTERS: dict[str, Callable[..., Any]] = {"choice": seeded_choice, "most_frequent": most_frequent}
JINJA_GLOBALS: dict[str, Any] = {"zip": zip}


def add_jinja_extras(env: jinja2.Environment) -> jinja2.Environment:
    """Give a Jinja environment promptsource's extras (`zip`, `choice`, `most_frequent`).

    `make_environment()` calls this, so imported templates render wherever
    templates are rendered; it is idempotent and deterministic.
    """
    for name, function in JINJA_FILTERS.items():
        env.filters.setdefault(name, function)
    for name, value in JINJA_GLOBALS.items():
        env.globals.setdefault(name, value)
    return env
