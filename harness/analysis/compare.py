"""Two runs compared sample by sample: which differences between them are more than noise.

Two checkpoints evaluated on the same rows, templates and shot counts differ partly by chance (a
few hundred rows give a few points of noise), so a delta is only worth reporting with its interval.
The runs are paired: only samples present in both count, and the bootstrap draws the same rows for
both, so the row-to-row variation they share cancels and the interval is as narrow as the data
allows. Scores are built as in `harness.analysis` (template mean over its samples, task mean over
templates, cluster mean over tasks); the overall score is the mean over clusters, so a cluster with
many tasks does not outweigh one with few.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.scores import (
    Samples,
    bootstrap_rng,
    check_bootstrap,
    check_samples,
    clean,
    label_order,
    metric_label,
    percentile_interval,
    row_weights,
    seen_labels,
    task_metrics,
    value_sum_count,
    weighted_cell_means,
)
from harness.errors import HarnessError
from harness.eval.record import RunRecord, Sample, SampleId

Run = tuple[RunRecord, Samples]


def run_label(record: RunRecord, name: str | None = None) -> str:
    """How a run is named in a comparison: `name` (its folder; default the recorded run id) and the
    model's short name, since run ids alone rarely say which checkpoint is which."""
    model_name = record.spec.model_name
    name = name if name is not None else record.run_id
    if not model_name:
        return name
    short = Path(model_name.rstrip("/")).name or model_name
    return f"{name} ({short})"


def _index(label: str, samples: Samples) -> dict[SampleId, Sample]:
    return {s.id: s for s in check_samples(label, samples)}


class _PairedTask:
    """One task's shared samples as rows x (template, shots) arrays of sums and counts, per run."""

    def __init__(self, task: str, cluster: str, metric: str) -> None:
        self.task, self.cluster, self.metric = task, cluster, metric
        self.rows: set[str] = set()
        self.columns: dict[tuple[str, str, int], int] = {}
        self.pairs: list[tuple[str, int, Sample, Sample]] = []

    def add(self, key: SampleId, a: Sample, b: Sample, labels: tuple[str, str]) -> None:
        for label, sample in zip(labels, (a, b), strict=True):
            if self.metric not in sample.metrics:
                raise HarnessError(f"{label}: sample {sample.key!r} has no value for metric "
                                   f"{self.metric!r}, which task {self.task!r} is ranked by")
        self.rows.add(key.row_id)
        column = self.columns.setdefault((key.template, key.template_hash, key.shots), len(self.columns))
        self.pairs.append((key.row_id, column, a, b))

    def arrays(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows in sorted id order, so the draws do not depend on sample order or on which run is A."""
        position = {row: i for i, row in enumerate(sorted(self.rows))}
        sums = np.zeros((len(self.rows), len(self.columns)))
        counts = np.zeros_like(sums)
        for row, column, *pair in self.pairs:
            total, count = value_sum_count(pair[side].metrics[self.metric])
            sums[position[row], column] += total
            counts[position[row], column] += count
        return sums, counts

    def by_shots(self, seed: int, resamples: int) -> dict[int, dict[str, Any]]:
        """Per shot count: both runs' task score (mean over templates), and the same per bootstrap draw.

        One draw of rows serves every template and shot count of the task and both runs."""
        (sums_a, counts_a), (sums_b, counts_b) = self.arrays(0), self.arrays(1)
        full = np.ones((1, len(self.rows)))
        point_a = weighted_cell_means(full, sums_a, counts_a)[0]
        point_b = weighted_cell_means(full, sums_b, counts_b)[0]
        draws_a, draws_b = [], []
        for weights in row_weights(bootstrap_rng(seed, self.task), len(self.rows), resamples):
            draws_a.append(weighted_cell_means(weights, sums_a, counts_a))
            draws_b.append(weighted_cell_means(weights, sums_b, counts_b))
        replicates_a, replicates_b = np.concatenate(draws_a), np.concatenate(draws_b)
        samples_per_column = np.bincount([column for _, column, _, _ in self.pairs], minlength=len(self.columns))
        result = {}
        for shots in sorted({k for _, _, k in self.columns}):
            picked = [i for (_, _, k), i in self.columns.items() if k == shots]
            result[shots] = {
                "a": float(point_a[picked].mean()), "b": float(point_b[picked].mean()),
                "draws_a": replicates_a[:, picked].mean(axis=1), "draws_b": replicates_b[:, picked].mean(axis=1),
                "n": int(samples_per_column[picked].sum()),
            }
        return result


def _row(name: dict[str, Any], metric: str, parts: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """A comparison row from the parts it averages (tasks, clusters, shot counts), each counting once."""
    a = float(np.mean([p["a"] for p in parts]))
    b = float(np.mean([p["b"] for p in parts]))
    draws_a = np.mean([p["draws_a"] for p in parts], axis=0)
    draws_b = np.mean([p["draws_b"] for p in parts], axis=0)
    low, high = percentile_interval(draws_b - draws_a, confidence)
    return {**name, "metric": metric, "a": clean(a), "b": clean(b), "delta": clean(b - a), "low": low, "high": high,
            "significant": bool(low > 0 or high < 0), "n": int(sum(p["n"] for p in parts)),
            "draws_a": draws_a, "draws_b": draws_b}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("draws_")}


def _metric(names: list[str]) -> str:
    return metric_label(names)


def _pair_tasks(a: Run, b: Run, labels: tuple[str, str] | None) -> tuple[str, str, int, int, int,
                                                                         dict[str, _PairedTask]]:
    """(label a, label b, shared, only in a, only in b, the shared samples per task), or a one-line
    error when the runs share nothing or rank a task by different metrics."""
    (record_a, samples_a), (record_b, samples_b) = a, b
    label_a, label_b = labels or (run_label(record_a), run_label(record_b))
    index_a, index_b = _index(label_a, samples_a), _index(label_b, samples_b)
    shared = [key for key in index_a if key in index_b]
    if not shared:
        raise HarnessError(f"{label_a} and {label_b} share no samples (same tasks, templates, shots and rows); "
                           "rerun one with the other's --tasks/--templates/--shots/--limit")
    metrics_a, metrics_b = task_metrics(record_a), task_metrics(record_b)
    tasks: dict[str, _PairedTask] = {}
    for key in shared:
        task = key.task
        if task not in tasks:
            for label, metrics in ((label_a, metrics_a), (label_b, metrics_b)):
                if task not in metrics:
                    raise HarnessError(f"{label}: task {task!r} has samples but no score in run.json; "
                                       "the run folder mixes files of different runs")
            if metrics_a[task] != metrics_b[task]:
                raise HarnessError(f"task {task!r} is ranked by {metrics_a[task]!r} in {label_a} and by "
                                   f"{metrics_b[task]!r} in {label_b}; compare runs of the same task file")
            tasks[task] = _PairedTask(task, index_a[key].cluster, metrics_a[task])
        tasks[task].add(key, index_a[key], index_b[key], (label_a, label_b))
    return (label_a, label_b, len(shared), len(index_a) - len(shared), len(index_b) - len(shared), tasks)


def compare_runs(a: Run, b: Run, *, seed: int = 0, resamples: int = 1000, confidence: float = 0.95,
                 labels: tuple[str, str] | None = None) -> dict[str, Any]:
    """Run b against run a on their shared samples: per task, cluster and overall, b - a with a paired
    bootstrap interval.

    `a` and `b` are what `harness.eval.store.load_run` returns; `labels` names them (default: the
    recorded run id and model). A row is significant when its interval excludes zero.
    """
    check_bootstrap(seed, resamples, confidence)
    label_a, label_b, shared, only_a, only_b, tasks = _pair_tasks(a, b, labels)
    task_rows, per_cluster = [], defaultdict(lambda: defaultdict(list))
    for name, paired in tasks.items():
        for shots, part in paired.by_shots(seed, resamples).items():
            row = _row({"task": name, "cluster": paired.cluster, "shots": shots}, paired.metric, [part], confidence)
            task_rows.append(row)
            per_cluster[paired.cluster][shots].append(row)
    cluster_rows = []
    for cluster, by_shots in per_cluster.items():
        for shots, rows in by_shots.items():
            cluster_rows.append(_row({"cluster": cluster, "shots": shots}, _metric([r["metric"] for r in rows]),
                                     rows, confidence))
    # A cluster's overall score is its mean over shot counts; overall is the mean over clusters.
    cluster_means = []
    for cluster in per_cluster:
        rows = [r for r in cluster_rows if r["cluster"] == cluster]
        cluster_means.append(_row({}, _metric([r["metric"] for r in rows]), rows, confidence))
    overall = _row({"shots": sorted({r["shots"] for r in cluster_rows})},
                   _metric([r["metric"] for r in cluster_rows]), cluster_means, confidence)
    return {
        "a": label_a, "b": label_b, "shared_samples": shared, "only_a": only_a, "only_b": only_b,
        "seed": seed, "resamples": resamples, "confidence": confidence,
        "overall": _public(overall),
        "clusters": [_public(r) for r in sorted(cluster_rows, key=lambda r: (r["cluster"], r["shots"]))],
        "tasks": [_public(r) for r in sorted(task_rows, key=lambda r: (r["cluster"], r["task"], r["shots"]))],
    }


def paired_task_scores(a: Run, b: Run, *, seed: int = 0, resamples: int = 1000, confidence: float = 0.95,
                       labels: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Per task, shot count and b's seen_status: both runs' scores on the samples they share, each
    with its own bootstrap interval (`a_low`..`b_high`) besides the paired one of the delta.

    This is what a base-against-tuned scatter plots, so that a point's two coordinates average the
    same rows and templates, as `compare_runs`' task rows do: a task scored over all of a run's rows
    on one axis and over the shared ones in the table beside it would show two numbers for one
    score. Where b labels a task's templates differently (some seen in training, some held out),
    the task gets a row per label, over that label's templates; otherwise its row's `a`, `b` and
    `delta` are exactly `compare_runs`' task row. Raises when the runs share no samples.
    """
    check_bootstrap(seed, resamples, confidence)
    label_a, label_b, *_ = _pair_tasks(a, b, labels)  # one error for runs that share nothing, not one per label
    status = seen_labels(b[0])
    by_label: dict[str | None, list[Sample]] = defaultdict(list)
    for sample in check_samples(label_b, b[1]):
        by_label[status.get((sample.task, sample.template, sample.template_hash, sample.shots))].append(sample)
    rows = []
    for label, samples in by_label.items():
        try:
            tasks = _pair_tasks(a, (b[0], samples), (label_a, label_b))[-1]
        except HarnessError:  # none of this label's samples is in a: nothing to pair
            continue
        for name, paired in tasks.items():
            for shots, part in paired.by_shots(seed, resamples).items():
                row = _row({"task": name, "cluster": paired.cluster, "shots": shots, "seen_status": label},
                           paired.metric, [part], confidence)
                a_low, a_high = percentile_interval(row["draws_a"], confidence)
                b_low, b_high = percentile_interval(row["draws_b"], confidence)
                rows.append({**_public(row), "a_low": a_low, "a_high": a_high, "b_low": b_low, "b_high": b_high})
    return sorted(rows, key=lambda r: (r["cluster"], r["task"], r["shots"], label_order(r["seen_status"])))


def compare_by_seen_status(a: Run, b: Run, *, seed: int = 0, resamples: int = 1000, confidence: float = 0.95,
                           labels: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Run b (a tuned checkpoint) against run a (its base) separately for each of b's seen/held-out
    labels: the FLAN question, "did tuning help on what the model never saw?", as one row per label
    (overall) and per label and cluster.

    Each label's comparison keeps only the samples b scores under that label, so a seen template never
    props up a held-out number. Rows carry `seen_status` and `cluster` ("(overall)" for the label's
    mean over clusters). Empty when b has no labels.
    """
    (record_a, samples_a), (record_b, samples_b) = a, b
    label_a, label_b = labels or (run_label(record_a), run_label(record_b))
    typed_a, typed_b = check_samples(label_a, samples_a), check_samples(label_b, samples_b)
    status = seen_labels(record_b)
    rows: list[dict[str, Any]] = []
    for label in ("seen", "held_out_template", "held_out_task", "held_out_cluster"):
        keys = {key for key, value in status.items() if value == label}
        if not keys:
            continue

        def kept(samples: list[Sample], keys: set = keys) -> list[Sample]:
            return [s for s in samples if (s.task, s.template, s.template_hash, s.shots) in keys]

        comparison = compare_runs((record_a, kept(typed_a)), (record_b, kept(typed_b)), seed=seed,
                                  resamples=resamples, confidence=confidence, labels=labels)
        rows.append({"seen_status": label, "cluster": "(overall)", **comparison["overall"]})
        rows += [{"seen_status": label, **row} for row in comparison["clusters"]]
    return rows
