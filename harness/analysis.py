"""Scores of generalization read off run records: how much a score depends on the wording.

T0 reports, per task, the median and spread of accuracy across its prompt templates; a single
number per task hides that a model can swing by tens of points between two wordings of one
instruction. These functions compute that spread from a run record's per-template scores.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from harness.report import primary_metric, ungrouped


def template_sensitivity(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (task, shots): the primary metric's median, quartiles, range, best and worst template."""
    by_task: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for score in ungrouped(record):
        by_task[(score["task"], score["shots"])].append(score)
    rows = []
    for (task, shots), scores in sorted(by_task.items()):
        metric = primary_metric(scores[0])
        means = {s["template"]: s["metrics"][metric]["mean"] for s in scores}
        values = np.asarray(list(means.values()))
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        rows.append({
            "task": task, "cluster": scores[0]["cluster"], "shots": shots, "metric": metric,
            "templates": len(values), "median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(values.min()), "max": float(values.max()),
            # No best or worst when every template scores the same (a tie names nothing).
            "best_template": max(means, key=lambda t: (means[t], t)) if values.max() > values.min() else None,
            "worst_template": min(means, key=lambda t: (means[t], t)) if values.max() > values.min() else None,
        })
    return rows
