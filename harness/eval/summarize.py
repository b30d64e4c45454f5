"""Scores of a run: every metric per (task, template, shots), and per value of a `report_by` field."""

from __future__ import annotations

from dataclasses import asdict

from harness.eval.plan import PlannedSample
from harness.eval.record import MetricScore, Sample, ScoreEntry, ScoreGroup
from harness.metrics import flatten, headline_value, mean_and_stderr
from harness.seen import DeclaredSeen, TrainingManifest, seen_status


def _metrics(members: list[PlannedSample], samples: dict[str, Sample], seed: int) -> dict[str, MetricScore]:
    """Every metric of a group of samples: mean and bootstrap stderr over the flattened values."""
    names = list(dict.fromkeys(name for s in members for name in samples[s.key].metrics))
    return {name: MetricScore(*mean_and_stderr(flatten([samples[s.key].metrics[name] for s in members]), seed))
            for name in names}


def summarize(plan: list[PlannedSample], samples: dict[str, Sample], seed: int,
              manifest: TrainingManifest | None = None, declared: DeclaredSeen | None = None,
              ) -> list[ScoreEntry]:
    """Scores per (task, template, shots), and per value of each `report_by` row field.

    With the checkpoint's training manifest, each entry also says how its (task, template) relates
    to the training: `seen_status` (see `harness.seen.seen_status`); with tasks declared by `--seen`
    instead, the label comes from the declaration (`DeclaredSeen.status`)."""
    groups: dict[tuple[str, str, int, str, str], list[PlannedSample]] = {}
    for sample in plan:
        base = (sample.task.name, sample.template.id, sample.shots)
        groups.setdefault((*base, "", ""), []).append(sample)
        for field in sample.task.report_by:
            groups.setdefault((*base, field, str(sample.source.get(field))), []).append(sample)
    scores = []
    for (task_name, template_id, shots, field, value), members in groups.items():
        task, template = members[0].task, members[0].template
        status = None
        if manifest is not None:
            status = seen_status(manifest, task_name, template_id, template.hash, task.cluster)
        elif declared is not None:
            status = declared.status(task_name, task.cluster)
        scores.append(ScoreEntry(
            task=task_name, cluster=task.cluster, template=template_id, template_hash=template.hash,
            template_tags=asdict(template.tags), shots=shots, n=len(members),
            metrics=_metrics(members, samples, seed), primary_metric=headline_value(task.metrics[0]),
            seen_status=status, group=ScoreGroup(field, value) if field else None,
        ))
    return scores
