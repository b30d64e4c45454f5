"""Reading a JSON object into typed fields, one field at a time, with one-line errors naming the field.

Run records and samples come back from disk as plain JSON. `Fields` takes each field exactly once,
checks its type, and refuses a missing, mistyped or unknown field with a `RecordError` whose message
names the field by its path in the object (`scores[3].metrics.acc.mean`), so whoever reads a file can
prefix the file and line and the user sees where the damage is. Values are kept as JSON gave them
(an integer mean stays an integer), so a record read and written again has the bytes it had.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


class RecordError(HarnessError):
    """A field of a record or sample that is missing, mistyped or unknown.

    The message reads after the name of what was being read: "lacks field 'n'", "has field 'shots'
    that is not an integer"; readers of files prefix the file and line."""


@dataclass(frozen=True)
class Check:
    """What a field's value must be: a test, and the words that say it in an error."""

    accepts: Callable[[Any], bool]
    what: str


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TEXT = Check(lambda v: isinstance(v, str), "a string")
INTEGER = Check(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
NUMBER = Check(_is_number, "a number")
OBJECT = Check(lambda v: isinstance(v, dict), "an object")


def list_of(item: Check, what: str) -> Check:
    return Check(lambda v: isinstance(v, list) and all(item.accepts(x) for x in v), what)


TEXTS = list_of(TEXT, "a list of strings")
BOOLEANS = list_of(Check(lambda v: isinstance(v, bool), "a boolean"), "a list of booleans")
INTEGERS = list_of(INTEGER, "a list of integers")
NUMBERS = list_of(NUMBER, "a list of numbers")
OBJECTS = list_of(OBJECT, "a list of objects")
TEXT_OBJECT = Check(lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                    "an object of strings")
METRIC_VALUES = Check(lambda v: isinstance(v, dict) and all(_is_number(x) or NUMBERS.accepts(x) for x in v.values()),
                      "an object of numbers or lists of numbers")
"""A sample's metrics: one value per metric, or a list where a sample holds several judgements."""


class Fields:
    """One JSON object being read: `take` each field once, then `done` refuses any field left over."""

    def __init__(self, raw: Any, path: str = "") -> None:
        if not isinstance(raw, dict):
            raise RecordError(f"has field {path!r} that is not an object" if path else "is not a JSON object")
        self.raw, self.path, self.taken = raw, path, set()

    def name(self, field: str) -> str:
        """The field's path from the top of the document, as errors name it."""
        return f"{self.path}.{field}" if self.path else field

    def take(self, field: str, check: Check) -> Any:
        self.taken.add(field)
        if field not in self.raw:
            raise RecordError(f"lacks field {self.name(field)!r}")
        return self._checked(field, check)

    def maybe(self, field: str, check: Check) -> Any:
        """The field's value, or None where it is absent (fields that older files lack)."""
        self.taken.add(field)
        return self._checked(field, check) if field in self.raw else None

    def _checked(self, field: str, check: Check) -> Any:
        value = self.raw[field]
        if not check.accepts(value):
            raise RecordError(f"has field {self.name(field)!r} that is not {check.what}")
        return value

    def nested(self, field: str) -> Fields:
        """The field's object, to be read field by field in its turn."""
        self.taken.add(field)
        if field not in self.raw:
            raise RecordError(f"lacks field {self.name(field)!r}")
        return Fields(self.raw[field], self.name(field))

    def maybe_nested(self, field: str) -> Fields | None:
        """As `nested`, or None where the field is absent."""
        return self.nested(field) if field in self.raw else None

    def items(self, field: str) -> list[Fields]:
        """The field's list of objects, each to be read field by field."""
        values = self.take(field, OBJECTS)
        return [Fields(value, f"{self.name(field)}[{i}]") for i, value in enumerate(values)]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.taken)
        if unknown:
            raise RecordError(f"has unknown field {self.name(unknown[0])!r}")
