"""The report's inputs: run folders and a cluster sweep's sweep.json, each checked with a one-line error.

A run folder is read by `harness.eval.store.load_run` into a typed record and its samples; a sweep
has no typed form of its own (it is `harness tune --sweep`'s output), so its fields are checked here
before a figure or a table trusts them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample
from harness.eval.store import load_run

LoadedRun = tuple[str, RunRecord, list[Sample]]
"""A run as the report reads it: its folder, its record and its samples."""


def load_runs(paths: list[Path]) -> list[LoadedRun]:
    """(directory, record, samples) per run folder, with a one-line error naming a bad folder."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise HarnessError(f"{path}: no such run directory; give folders written by `harness run` "
                               "(results/<run-id>)")
        if not (path / "samples.jsonl").exists() and (path / "run.json").exists():
            raise HarnessError(f"{path}: run.json without samples.jsonl; the run directory is incomplete "
                               "(rerun its `harness run` command with --overwrite)")
        record, samples = load_run(path)
        runs.append((str(path), record, samples))
    return runs


def load_sweep(path: Path) -> dict[str, Any]:
    """A cluster sweep's `sweep.json` (given the file or its folder), checked field by field."""
    file = path / "sweep.json" if path.is_dir() else path
    if not file.is_file():
        raise HarnessError(f"{path}: no sweep.json; give the folder `harness tune --sweep clusters` wrote "
                           "or its sweep.json")
    try:
        sweep = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{file}: not valid JSON ({exc}); rerun the sweep or fix the file") from None
    return check_sweep(sweep, str(file))


def check_sweep(sweep: Any, where: str = "sweep") -> dict[str, Any]:
    """The sweep with every point carrying its metric, or a one-line error naming the bad field.

    The metric may be given once at the top level or per point (`harness tune --sweep` writes it per
    point, as `analysis.overall_score` returns it); both read the same afterwards."""

    def bad(field: str, what: str) -> HarnessError:
        return HarnessError(f"{where}: field {field!r} {what}; rerun `harness tune --sweep clusters` to rewrite it")

    if not isinstance(sweep, dict):
        raise bad("(top level)", "must be an object")
    held_out = sweep.get("held_out_clusters")
    if not isinstance(held_out, list) or not all(isinstance(c, str) for c in held_out):
        raise bad("held_out_clusters", "must be a list of cluster names")
    top_metric = sweep.get("metric")
    if top_metric is not None and not isinstance(top_metric, str):
        raise bad("metric", "must be a string")
    points = sweep.get("points")
    if not isinstance(points, list) or not points:
        raise bad("points", "must be a non-empty list")
    checked = []
    for index, point in enumerate(points):
        field = f"points[{index}]"
        if not isinstance(point, dict):
            raise bad(field, "must be an object")
        if not isinstance(point.get("n_clusters"), int) or isinstance(point["n_clusters"], bool):
            raise bad(f"{field}.n_clusters", "must be an integer")
        trained = point.get("trained_clusters", [])
        if not isinstance(trained, list) or not all(isinstance(c, str) for c in trained):
            raise bad(f"{field}.trained_clusters", "must be a list of cluster names")
        metric = point.get("metric", top_metric)
        if not isinstance(metric, str):
            raise bad(f"{field}.metric", "must be a string (or give 'metric' once at the top level)")
        for key in ("mean", "low", "high"):
            if not _is_number(point.get(key)):
                raise bad(f"{field}.{key}", "must be a number")
        for key in ("run", "checkpoint"):
            if point.get(key) is not None and not isinstance(point[key], str):
                raise bad(f"{field}.{key}", "must be a path")
        checked.append({**point, "trained_clusters": trained, "metric": metric})
    checked.sort(key=lambda p: p["n_clusters"])
    metrics = list(dict.fromkeys(p["metric"] for p in checked))
    return {**sweep, "metric": top_metric or ",".join(metrics), "points": checked}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

