"""Scores of a run: every metric per (task, template, shots), and per value of a `report_by` field."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.eval.plan import PlannedSample
from harness.metrics import flatten, headline_value, mean_and_stderr
from harness.seen import DeclaredSeen, TrainingManifest, seen_status


def _score_entry(members: list[PlannedSample], samples: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """Every metric of a group of samples: mean and bootstrap stderr over the flattened values."""
    names = list(dict.fromkeys(name for s in members for name in samples[s.key]["metrics"]))
    metrics = {}
    for name in names:
        mean, stderr = mean_and_stderr(flatten([samples[s.key]["metrics"][name] for s in members]), seed)
        metrics[name] = {"mean": mean, "stderr": stderr}
    return {"n": len(members), "primary_metric": headline_value(members[0].task.metrics[0]), "metrics": metrics}


def summarize(plan: list[PlannedSample], samples: dict[str, dict[str, Any]], seed: int,
              manifest: TrainingManifest | None = None, declared: DeclaredSeen | None = None,
              ) -> list[dict[str, Any]]:
    """Scores per (task, template, shots), and per value of each `report_by` row field.

    With the checkpoint's training manifest, each entry also says how its (task, template) relates
    to the training: `seen_status` (see `harness.tune.manifest.seen_status`); with tasks declared
    by `--seen` instead, the label comes from the declaration (`DeclaredSeen.status`)."""
    groups: dict[tuple[str, str, int, str, str], list[PlannedSample]] = {}
    for sample in plan:
        base = (sample.task.name, sample.template.id, sample.shots)
        groups.setdefault((*base, "", ""), []).append(sample)
        for field in sample.task.report_by:
            groups.setdefault((*base, field, str(sample.source.get(field))), []).append(sample)
    scores = []
    for (task_name, template_id, shots, field, value), members in groups.items():
        task, template = members[0].task, members[0].template
        entry: dict[str, Any] = {
            "task": task_name, "cluster": task.cluster, "template": template_id, "template_hash": template.hash,
            "template_tags": asdict(template.tags), "shots": shots,
        }
        if manifest is not None:
            entry["seen_status"] = seen_status(manifest, task_name, template_id, template.hash, task.cluster)
        elif declared is not None:
            entry["seen_status"] = declared.status(task_name, task.cluster)
        if field:
            entry["group"] = {"field": field, "value": value}
        entry.update(_score_entry(members, samples, seed))
        scores.append(entry)
    return scores
