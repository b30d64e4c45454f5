"""The run record as written to run.json, and how its scores are read.

`primary_metric` and `ungrouped` read a record; analysis and report both use them, so they live
with the record rather than with either reader.
"""

from __future__ import annotations

from typing import Any


def ungrouped(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The scores per (task, template, shots), without the per-`report_by`-value ones."""
    return [s for s in record["scores"] if "group" not in s]


def primary_metric(score: dict[str, Any]) -> str:
    """The metric a task is ranked by: its first declared metric.

    run.json is written with sorted keys, so a loaded score's `metrics` are in alphabetical order;
    the entry's `primary_metric` keeps the declared first one (records written before it existed
    fall back to the first key)."""
    return score.get("primary_metric") or next(iter(score["metrics"]))
