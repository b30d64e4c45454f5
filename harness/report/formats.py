"""How every table of the harness writes a score: in percent, one decimal, rounded half away from zero.

The terminal tables, the HTML page and its Markdown twin all format numbers here, so one quantity
reads the same wherever it is shown. Python's own `f"{100 * x:.1f}"` rounds the binary float, and
0.5125 (41 of 80 right) is stored a hair below 0.5125: it printed as 51.2 where a mean that came out
a hair above printed 51.3. Here the float noise is rounded off first (to nine decimals of a percent,
far below any score's precision), then the tie goes away from zero, as a reader rounds by hand.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

DASH = "\u2013"
_TENTH = Decimal("0.1")


def _percent(value: float, sign: str = "") -> str:
    """100 x value to one decimal, half away from zero (Decimal's ROUND_HALF_UP); `sign="+"` for deltas."""
    scaled = 100 * float(value)
    if not math.isfinite(scaled):
        return f"{scaled:{sign}.1f}"
    rounded = Decimal(repr(round(scaled, 9))).quantize(_TENTH, rounding=ROUND_HALF_UP)
    if rounded.is_zero():  # -0.04 is "0.0", never "-0.0"
        rounded = rounded.copy_abs()
    return f"{rounded:{sign}f}"


def pct(value: float | None, missing: str = DASH) -> str:
    """A score in percent with one decimal, as every table of the harness shows it."""
    return missing if value is None else _percent(value)


def signed(value: float | None, missing: str = DASH) -> str:
    """A difference of scores in points, with its sign."""
    return missing if value is None else _percent(value, "+")


def interval(low: float | None, high: float | None, sign: str = "") -> str:
    """[low, high] in percent, as every table writes intervals; `sign="+"` for deltas."""
    return DASH if low is None or high is None else f"[{_percent(low, sign)}, {_percent(high, sign)}]"


def span(low: float | None, high: float | None, between: str = DASH) -> str:
    """A range that is not an interval (quartiles, min to max)."""
    return DASH if low is None or high is None else f"{_percent(low)}{between}{_percent(high)}"
