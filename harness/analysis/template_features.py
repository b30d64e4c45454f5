"""Template tags as covariates: one-hot columns of each tag's values, for the budget estimator.

A template's tags say what kind of wording it is: whether it lists the options, its style, and for
a generated format variant the form choices of `tags.extra.format` (separator, casing, enumerator,
answer prefix, ...). Templates that share a choice are expected to share part of its effect on the
score, so the estimator writes a template's effect as the sum of its choices' effects plus its own
remainder; this module turns tags into that design matrix.

What counts as a tag: every scalar (text, number, boolean) among the top-level tags, the scalar
entries of `tags.extra` and those of `tags.extra.format`, named by their path (`options`,
`format.separator`, `extra.KEY`). Left out: `generated` and the variant's `source` / `source_hash`
(a variant's source wording is not a form choice; its options and style tags already describe it,
and a column per source would take their effect away from them), lists (a variant's instruction
texts), tags with one value over the templates (they explain no difference) and, among three or
more templates, tags whose every template has its own value (an identifier, not a shared choice).
A template that lacks a tag others have gets the value "(none)", itself a level: a variant whose
template has no separator differs from one with a separator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING = "(none)"
_SKIPPED = frozenset({"extra.generated", "format.source", "format.source_hash"})


@dataclass(frozen=True)
class TagColumn:
    """One tag with its values over the templates: the design matrix holds one column per value,
    in `levels` order, starting at `start`. `reference` is the value effects are measured from:
    false for a yes/no tag (so "options: true" reads as the effect of listing the options), else the
    most common value."""

    tag: str
    levels: tuple[str, ...]
    reference: str
    start: int


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def template_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """A template's tags as {path: value as text}, scalars only (see the module docstring)."""
    flat: dict[str, str] = {}
    extra = tags.get("extra") if isinstance(tags.get("extra"), Mapping) else {}
    layers = [("", {k: v for k, v in tags.items() if k != "extra"}),
              ("extra.", {k: v for k, v in extra.items() if k != "format"})]
    if isinstance(extra.get("format"), Mapping):
        layers.append(("format.", extra["format"]))
    for prefix, layer in layers:
        for key, value in layer.items():
            if _scalar(value) and prefix + key not in _SKIPPED:
                flat[prefix + key] = _text(value)
    return flat


def _reference(levels: Sequence[str], values: Sequence[str]) -> str:
    if set(levels) <= {"false", "true", MISSING} and "false" in levels:
        return "false"
    return min(levels, key=lambda level: (-values.count(level), level))


def tag_design(tags: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, tuple[TagColumn, ...]]:
    """(templates x columns) one-hot matrix of the templates' tags, in the order given, and what its
    columns are. A single template, or templates whose tags do not differ, give zero columns."""
    flat = [template_tags(t) for t in tags]
    columns: list[TagColumn] = []
    blocks: list[np.ndarray] = []
    start = 0
    for tag in sorted({key for item in flat for key in item}):
        values = [item.get(tag, MISSING) for item in flat]
        levels = tuple(sorted(set(values)))
        if len(levels) < 2 or len(levels) == len(values) > 2:
            continue
        block = np.array([[value == level for level in levels] for value in values], dtype=np.float64)
        columns.append(TagColumn(tag, levels, _reference(levels, values), start))
        blocks.append(block)
        start += len(levels)
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(flat), 0))
    return matrix, tuple(columns)

