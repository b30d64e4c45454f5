"""The project's one Jinja environment: sandboxed, strict, bounded, and with promptsource's extras.

Every template (task files, template files, imported promptsource templates) is parsed and rendered
in an environment made here, so a template renders the same wherever it is used. promptsource's
extras (`zip`, the `choice` and `most_frequent` filters) are always present, so imported templates
render as written; `choice` is seeded by the row's content (see `seeded_choice`).

Templates come from files anyone can write, so rendering one must not exhaust the machine: the
sandbox already blocks attribute escapes; here a render is also bounded in time, output size, range
length and the size of `*`/`+`/`**` results, and a template has no loader (`include`, `import` and
`extends` fail cleanly). A breach raises `TemplateBoundError`, a `jinja2.TemplateError`, which
the renderer reports as one line naming the template.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jinja2
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MAX_RENDER_SECONDS = 5.0
MAX_OUTPUT_CHARS = 1_000_000
MAX_RANGE = 10_000
MAX_VALUE_SIZE = 1_000_000  # characters of a string, items of a list, digits of a number
_deadline = threading.local()


class TemplateBoundError(SecurityError):
    """A template tried to use more time, output, range or memory than one prompt may."""


def _check_time() -> None:
    until = getattr(_deadline, "until", None)
    if until is not None and time.monotonic() > until:
        raise TemplateBoundError(f"rendering took more than {MAX_RENDER_SECONDS:g} s; simplify the template's loops")


def printed_fields(env: jinja2.Environment, source: str) -> set[str]:
    """Names a template prints unconditionally (`{{ claim }}`, `{{ claim | upper }}`, outside any
    `{% if %}`): a null value there would read "None" in the prompt, so a row missing such a field
    is refused before rendering. A field printed under `{% if %}` is the template's own business."""
    names: set[str] = set()

    def visit(node: jinja2.nodes.Node) -> None:
        if isinstance(node, (jinja2.nodes.If, jinja2.nodes.CondExpr)):
            return
        if isinstance(node, jinja2.nodes.Output):
            for child in node.nodes:
                while isinstance(child, jinja2.nodes.Filter) and child.node is not None:
                    child = child.node
                if isinstance(child, jinja2.nodes.Name):
                    names.add(child.name)
        for child in node.iter_child_nodes():
            visit(child)

    visit(env.parse(source))
    return names


class BoundedRange(Sequence):
    """`range` for templates: at most MAX_RANGE items, and every step of a loop checks the time limit."""

    def __init__(self, *args: int) -> None:
        self.inner = range(*args)
        if len(self.inner) > MAX_RANGE:
            raise TemplateBoundError(f"range of {len(self.inner)} items; templates may use at most {MAX_RANGE}")

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: Any) -> Any:
        return self.inner[index]

    def __iter__(self) -> Iterator[int]:
        for value in self.inner:
            _check_time()
            yield value

    def __repr__(self) -> str:
        return repr(self.inner)


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return len(str(abs(value))) if abs(value) < 10 ** 4300 else MAX_VALUE_SIZE + 1
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _bounded_power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * max(abs(base).bit_length(), 1) > 4 * MAX_VALUE_SIZE:
            raise TemplateBoundError(f"{base} ** {exponent} is too large a number for a template")
    return base ** exponent


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox with the bounds of the module docstring."""

    intercepted_binops = frozenset({"*", "+", "**"})
    _operators: dict[str, Callable[[Any, Any], Any]] = {"*": operator.mul, "+": operator.add, "**": _bounded_power}

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _check_time()
        if op == "*" and isinstance(right, int) and _size(left) * max(right, 0) > MAX_VALUE_SIZE \
                or op == "*" and isinstance(left, int) and _size(right) * max(left, 0) > MAX_VALUE_SIZE:
            raise TemplateBoundError(f"a value of more than {MAX_VALUE_SIZE} items would be built by '*'")
        result = self._operators[op](left, right)
        if _size(result) > MAX_VALUE_SIZE:
            raise TemplateBoundError(f"a value of more than {MAX_VALUE_SIZE} items was built by {op!r}")
        return result

    def concat(self, chunks: Iterable[str]) -> str:  # type: ignore[override]
        """Template.render's join of the output, consumed under the time and size limits."""
        previous = getattr(_deadline, "until", None)
        _deadline.until = time.monotonic() + MAX_RENDER_SECONDS if previous is None else previous
        try:
            parts, length = [], 0
            for chunk in chunks:
                length += len(chunk)
                if length > MAX_OUTPUT_CHARS:
                    raise TemplateBoundError(f"the rendered text passes {MAX_OUTPUT_CHARS} characters")
                _check_time()
                parts.append(chunk)
            return "".join(parts)
        finally:
            _deadline.until = previous


def make_environment() -> SandboxedEnvironment:
    """The project's Jinja environment: sandboxed, strict, bounded, whitespace kept exactly as written."""
    env = BoundedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False, cache_size=0,
                             loader=jinja2.DictLoader({}))
    env.globals["range"] = BoundedRange
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
