"""Scores of generalization read off run records: how much a score depends on the wording, and
how a model does on what it was tuned on against what it was not.

T0 reports, per task, the median and spread of accuracy across its prompt templates; a single
number per task hides that a model can swing by tens of points between two wordings of one
instruction. `template_sensitivity` computes that spread from a run record's per-template scores.
The other functions turn a run's samples into the numbers FLAN and T0 report: per-cluster and
per-task scores with bootstrap intervals split by seen / held-out label, zero- against k-shot, and
the seen minus held-out gap. All take what `harness.eval.store.load_run` returns (a typed record
and its samples) and give plain, JSON-ready dicts.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.eval.json_fields import RecordError
from harness.eval.record import RunRecord, Sample, ScoreEntry
from harness.metrics import flatten


def _by_task(record: RunRecord) -> dict[tuple[str, int], list[ScoreEntry]]:
    """The record's (task, template, shots) scores per (task, shots)."""
    by_task: dict[tuple[str, int], list[ScoreEntry]] = defaultdict(list)
    for score in record.ungrouped():
        by_task[(score.task, score.shots)].append(score)
    return by_task


def template_sensitivity(record: RunRecord) -> list[dict[str, Any]]:
    """Per (task, shots): the primary metric's median, quartiles, range, best and worst template."""
    rows = []
    for (task, shots), scores in sorted(_by_task(record).items()):
        metric = scores[0].primary
        means = {s.template: s.metrics[metric].mean for s in scores}
        values = np.asarray(list(means.values()))
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        rows.append({
            "task": task, "cluster": scores[0].cluster, "shots": shots, "metric": metric,
            "templates": len(values), "median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(values.min()), "max": float(values.max()),
            # No best or worst when every template scores the same (a tie names nothing).
            "best_template": max(means, key=lambda t: (means[t], t)) if values.max() > values.min() else None,
            "worst_template": min(means, key=lambda t: (means[t], t)) if values.max() > values.min() else None,
        })
    return rows


# Scores with intervals, read off a run's samples. A score is built bottom-up the same way
# everywhere: a template's mean is the mean of its samples' flattened values (as the run record's
# means are), a task's is the mean of its templates', a cluster's the mean of its tasks'. Intervals
# come from a bootstrap over a task's rows: a row is drawn with all its samples (every template of
# the row together; in a comparison also every shot count and both runs), because a hard row is
# hard in every wording and treating its templates as independent draws would understate the
# uncertainty.

LABEL_ORDER = ("seen", "held_out_template", "held_out_task", "held_out_cluster")
Samples = Sequence[Sample | Mapping[str, Any]]
"""A run's samples: typed, or in their JSON form (samples.jsonl's lines), which `check_samples` reads."""
_WEIGHT_CELLS = 2_000_000  # bootstrap weights drawn at a time (resamples x rows), bounding memory


def check_samples(label: str, samples: Samples) -> list[Sample]:
    """The samples, typed: a sample given in its JSON form (a line of samples.jsonl, as a caller may
    hold it) is read here, and one that is malformed is refused naming the run and the line."""
    checked = []
    for position, sample in enumerate(samples):
        try:
            checked.append(sample if isinstance(sample, Sample) else Sample.from_json(sample))
        except RecordError as exc:
            raise HarnessError(f"{label}: sample {position} of samples.jsonl {exc}; "
                               "it was not written by `harness run`") from None
    return checked


def check_bootstrap(seed: int, resamples: int, confidence: float) -> None:
    """Refuse settings under which a percentile interval means nothing."""
    if seed < 0:
        raise HarnessError(f"--seed must be a non-negative integer for the bootstrap, got {seed}")
    if resamples < 1:
        raise HarnessError(f"--resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise HarnessError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def bootstrap_rng(seed: int, *key: Any) -> np.random.Generator:
    """A generator per resampled unit (a task, say), so one unit's interval does not move when a run
    gains or loses other tasks."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def row_weights(rng: np.random.Generator, rows: int, resamples: int) -> Iterator[np.ndarray]:
    """Bootstrap draws of `rows` rows with replacement, as (draws x rows) counts of each row."""
    chunk = max(1, _WEIGHT_CELLS // max(rows, 1))
    uniform = np.full(rows, 1.0 / rows)
    for start in range(0, resamples, chunk):
        yield rng.multinomial(rows, uniform, size=min(chunk, resamples - start)).astype(np.float64)


def value_sum_count(value: float | list[float]) -> tuple[float, int]:
    """A sample's metric value as (sum, count) of its judgements; a list is several (see metrics.flatten)."""
    values = flatten([value])
    return float(sum(values)), len(values)


def cell_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per column (a template at a shot count): the mean of its rows' judgements."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.sum(axis=0) / counts.sum(axis=0)


def weighted_cell_means(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(draws x columns): each column's mean under each bootstrap draw of the rows."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ counts)


def clean(value: float) -> float:
    """A reported number without float noise: a delta that is zero must not read as 1e-17 above zero
    (and so "significant"), nor print as -0.0."""
    return round(float(value), 12) + 0.0


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return clean(low), clean(high)


def task_metrics(record: RunRecord) -> dict[str, str]:
    """Each task's primary metric, as the record's scores rank it."""
    metrics: dict[str, str] = {}
    for score in record.ungrouped():
        metrics.setdefault(score.task, score.primary)
    return metrics


def seen_labels(record: RunRecord) -> dict[tuple[str, str, str, int], str | None]:
    """(task, template, template hash, shots) -> the record's seen_status for it (None: unlabelled)."""
    return {(s.task, s.template, s.template_hash, s.shots): s.seen_status for s in record.ungrouped()}


def metric_label(names: Iterable[str]) -> str:
    """The metric(s) behind an aggregate: "acc", or "acc,exact_match" over tasks ranked differently."""
    return ",".join(sorted({part for name in names for part in name.split(",")}))


class _TaskCells:
    """One task's samples at one shot count and label, as rows x templates arrays of sums and counts."""

    def __init__(self, task: str, cluster: str, metric: str) -> None:
        self.task, self.cluster, self.metric = task, cluster, metric
        self.rows: set[str] = set()
        self.templates: dict[tuple[str, str], int] = {}
        self.entries: list[tuple[str, int, float, int]] = []

    def add(self, sample: Sample) -> None:
        if self.metric not in sample.metrics:
            raise HarnessError(f"sample {sample.key!r} has no value for metric "
                               f"{self.metric!r}, which its run's scores rank task {self.task!r} by; "
                               "the samples and run.json come from different runs")
        self.rows.add(sample.row_id)
        template = self.templates.setdefault((sample.template, sample.template_hash), len(self.templates))
        self.entries.append((sample.row_id, template, *value_sum_count(sample.metrics[self.metric])))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows in sorted id order, so the bootstrap draws do not depend on the order of samples.jsonl."""
        position = {row: i for i, row in enumerate(sorted(self.rows))}
        sums = np.zeros((len(self.rows), len(self.templates)))
        counts = np.zeros_like(sums)
        for row, template, total, count in self.entries:
            sums[position[row], template] += total
            counts[position[row], template] += count
        return sums, counts

    def score(self, seed: int, shots: int, label: str | None, resamples: int) -> tuple[float, np.ndarray]:
        """The task's mean over templates, and the same under each bootstrap draw of its rows."""
        sums, counts = self.arrays()
        rng = bootstrap_rng(seed, self.task, shots, label)
        replicates = np.concatenate([weighted_cell_means(w, sums, counts)
                                     for w in row_weights(rng, len(self.rows), resamples)])
        return clean(np.mean(cell_means(sums, counts))), replicates.mean(axis=1)


def _task_cells(record: RunRecord, samples: Samples,
                ) -> dict[tuple[str, int, str | None], _TaskCells]:
    metrics, labels = task_metrics(record), seen_labels(record)
    cells: dict[tuple[str, int, str | None], _TaskCells] = {}
    for sample in check_samples(record.run_id, samples):
        task = sample.task
        if task not in metrics:
            raise HarnessError(f"task {task!r} has samples but no score in the run record; "
                               "the samples and run.json come from different runs")
        label = labels.get((task, sample.template, sample.template_hash, sample.shots))
        key = (task, sample.shots, label)
        if key not in cells:
            cells[key] = _TaskCells(task, sample.cluster, metrics[task])
        cells[key].add(sample)
    return cells


def label_order(label: str | None) -> int:
    """Where a seen_status sorts: seen first, then the held-out labels, unlabelled last."""
    return LABEL_ORDER.index(label) if label in LABEL_ORDER else len(LABEL_ORDER)


def task_scores(record: RunRecord, samples: Samples, *, seed: int = 0, resamples: int = 1000,
                confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per (task, shots, seen_status): the primary metric's mean over templates with a bootstrap interval.

    A task whose templates carry different labels (some seen in training, some not) gets one row per
    label, so a seen wording never props up the held-out score. `seen_status` is None without labels.
    """
    check_bootstrap(seed, resamples, confidence)
    rows = []
    for (task, shots, label), cells in _task_cells(record, samples).items():
        mean, replicates = cells.score(seed, shots, label, resamples)
        low, high = percentile_interval(replicates, confidence)
        rows.append({
            "task": task, "cluster": cells.cluster, "shots": shots, "seen_status": label, "metric": cells.metric,
            "mean": mean, "low": low, "high": high, "templates": len(cells.templates), "samples": len(cells.entries),
        })
    return sorted(rows, key=lambda r: (r["cluster"], r["task"], r["shots"], label_order(r["seen_status"])))


def cluster_scores(record: RunRecord, samples: Samples, *, seed: int = 0,
                   resamples: int = 1000, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per (cluster, shots, seen_status): the mean over the cluster's tasks, each a mean over templates.

    This is the number instruction-tuning papers report per held-out cluster. The interval draws
    each task's rows independently (tasks have different rows) and averages the tasks' draws.
    """
    check_bootstrap(seed, resamples, confidence)
    groups: dict[tuple[str, int, str | None], list[tuple[_TaskCells, float, np.ndarray]]] = defaultdict(list)
    for (_, shots, label), cells in _task_cells(record, samples).items():
        groups[(cells.cluster, shots, label)].append((cells, *cells.score(seed, shots, label, resamples)))
    rows = []
    for (cluster, shots, label), members in groups.items():
        low, high = percentile_interval(np.mean([r for _, _, r in members], axis=0), confidence)
        rows.append({
            "cluster": cluster, "shots": shots, "seen_status": label,
            "metric": metric_label(c.metric for c, _, _ in members),
            "mean": clean(np.mean([m for _, m, _ in members])), "low": low, "high": high,
            "tasks": len(members), "samples": sum(len(c.entries) for c, _, _ in members),
        })
    return sorted(rows, key=lambda r: (r["cluster"], r["shots"], label_order(r["seen_status"])))


def _task_means(record: RunRecord) -> dict[tuple[str, int], tuple[str, str, float]]:
    """(task, shots) -> (cluster, metric, mean over the task's templates), from the record's scores."""
    means = {}
    for key, scores in _by_task(record).items():
        metric = scores[0].primary
        means[key] = (scores[0].cluster, metric, clean(np.mean([s.metrics[metric].mean for s in scores])))
    return means


def shots_curve(record: RunRecord, tasks: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Per task and shot count: the mean over templates; rows with task "(all)" average the tasks.

    Zero-shot against k-shot is how FLAN shows that exemplars matter less after tuning; the "(all)"
    rows give the one curve per run, each task weighing the same whatever its template count.
    `tasks` keeps only those tasks, so that runs of different task sets can be drawn on one axis
    over the tasks they share.
    """
    means = {key: value for key, value in _task_means(record).items() if tasks is None or key[0] in tasks}
    rows = [{"task": task, "cluster": cluster, "metric": metric, "shots": shots, "mean": mean}
            for (task, shots), (cluster, metric, mean) in means.items()]
    rows.sort(key=lambda r: (r["cluster"], r["task"], r["shots"]))
    for shots in sorted({s for _, s in means}):
        present = [v for (_, s), v in means.items() if s == shots]
        rows.append({"task": "(all)", "cluster": "(all)", "metric": metric_label(m for _, m, _ in present),
                     "shots": shots, "mean": clean(np.mean([mean for _, _, mean in present]))})
    return rows


def generalization_gap(record: RunRecord) -> list[dict[str, Any]]:
    """Per shot count: the mean primary metric of the (task, template) scores under each label, and
    the gap between seen and held-out.

    The gap is `seen` minus the mean of the held-out labels present, each label counting once: the
    three kinds of held-out-ness measure different things, and pooling their scores would let
    whichever has the most templates decide the number. Empty when the record has no labels.
    """
    labelled = [s for s in record.ungrouped() if s.seen_status is not None]
    rows = []
    for shots in sorted({s.shots for s in labelled}):
        by_label: dict[str, list[float]] = defaultdict(list)
        for score in labelled:
            if score.shots == shots:
                by_label[score.seen_status].append(score.metrics[score.primary].mean)
        row: dict[str, Any] = {"shots": shots}
        for label in LABEL_ORDER:
            row[label] = clean(np.mean(by_label[label])) if by_label.get(label) else None
        held_out = [row[label] for label in LABEL_ORDER[1:] if row[label] is not None]
        row["gap"] = clean(row["seen"] - np.mean(held_out)) if row["seen"] is not None and held_out else None
        rows.append(row)
    return rows


def overall_score(record: RunRecord, samples: Samples, *, seed: int = 0, resamples: int = 1000,
                  confidence: float = 0.95) -> dict[str, Any]:
    """The run in one number: the mean over clusters of each cluster's mean over its (task, shots,
    label) scores, with a bootstrap interval drawn as in `cluster_scores`.

    A cluster sweep plots this per checkpoint on the held-out clusters: every cluster weighs the same,
    however many tasks, templates or rows it has, as in FLAN's held-out averages.
    """
    check_bootstrap(seed, resamples, confidence)
    by_cluster: dict[str, list[tuple[_TaskCells, float, np.ndarray]]] = defaultdict(list)
    for (_, shots, label), cells in _task_cells(record, samples).items():
        by_cluster[cells.cluster].append((cells, *cells.score(seed, shots, label, resamples)))
    if not by_cluster:
        raise HarnessError(f"run {record.run_id!r} has no samples to score")
    means = [np.mean([m for _, m, _ in members]) for members in by_cluster.values()]
    replicates = np.mean([np.mean([r for _, _, r in members], axis=0) for members in by_cluster.values()], axis=0)
    low, high = percentile_interval(replicates, confidence)
    members = [c for group in by_cluster.values() for c, _, _ in group]
    return {"metric": metric_label(c.metric for c in members), "mean": clean(np.mean(means)), "low": low,
            "high": high, "clusters": len(by_cluster), "samples": sum(len(c.entries) for c in members)}
