"""Per-sample metrics and their aggregation, faithful to the reference implementations.

- acc / acc_norm: lm-eval's multiple-choice rule; acc_norm divides each option's log-likelihood
  by the option's length in characters (lm-eval's `acc_norm`, not a token count).
- exact_match / f1: SQuAD's normalisation (lower case, no punctuation, no articles, single spaces),
  maximum over the references.
- rouge_l: the Super-NaturalInstructions scorer: rouge-score's ROUGE-L F-measure with the Porter
  stemmer on the raw strings, maximum over the references.
Aggregates are means with a seeded bootstrap standard error.

Metrics are found by name (a task file's `metrics:`) in a registry: `@register_metric` here for the
built-in ones, in the benchmark module a metric belongs to for the others (`niv2`, `ifeval`), which
the registry imports on the first lookup it cannot answer (see `harness.tasks.sources`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from harness.plugins import NameRegistry

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
BOOTSTRAP_RESAMPLES = 1000

MetricValues = dict[str, float | list[float]]
"""A metric's per-sample result: one or more named values. A list holds several judgements of one
sample (IFEval's instruction-level checks); aggregation flattens lists, as lm-eval does."""

GenerateMetric = Callable[[str, Sequence[str], Mapping[str, Any]], MetricValues]
F = TypeVar("F", bound=Callable[..., MetricValues])


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, the task kinds it scores, and its headline value."""

    name: str
    function: Callable[..., MetricValues]
    kinds: tuple[str, ...]
    headline: str
    chooses: Callable[[Sequence[float], Sequence[str]], int] | None = None


_METRICS: NameRegistry[Metric] = NameRegistry("metric")


def register_metric(name: str, kinds: Sequence[str] = ("generate",), headline: str | None = None,
                    chooses: Callable[[Sequence[float], Sequence[str]], int] | None = None) -> Callable[[F], F]:
    """Register a per-sample metric under `name`, for tasks of the given kinds to declare in `metrics:`.

    The function's arguments depend on the kind: generate metrics take (prediction, references, row),
    choice metrics (logprobs, options, answer_index); both return MetricValues. `headline` is the
    value a task whose first metric is this one is ranked by (default: the value named `name`).
    `chooses`, for a choice metric that is 1 exactly when one option it picks is the answer, gives
    that option's index from (logprobs, options): the budget estimator's option model reads it.
    """

    def add(function: F) -> F:
        _METRICS.add(name, Metric(name, function, tuple(kinds), headline or name, chooses), function)
        return function

    return add


def metric_names(kind: str) -> tuple[str, ...]:
    """The metrics tasks of `kind` may declare, in registration order (the built-in ones first)."""
    return tuple(name for name, metric in _METRICS.entries().items() if kind in metric.kinds)


def most_likely(logprobs: Sequence[float], options: Sequence[str]) -> int:
    """The option with the highest summed log-likelihood (the first of equals, as numpy's argmax)."""
    return int(np.argmax(np.asarray(logprobs, dtype=np.float64)))


def most_likely_per_character(logprobs: Sequence[float], options: Sequence[str]) -> int:
    """The option with the highest log-likelihood per character of the option."""
    lengths = np.asarray([float(len(o)) for o in options])
    return int(np.argmax(np.asarray(logprobs, dtype=np.float64) / lengths))


@register_metric("acc", kinds=("choice",), chooses=most_likely)
def acc(logprobs: Sequence[float], options: Sequence[str], answer_index: int) -> MetricValues:
    """1 when the option with the highest summed log-likelihood is the answer."""
    return {"acc": float(most_likely(logprobs, options) == answer_index)}


@register_metric("acc_norm", kinds=("choice",), chooses=most_likely_per_character)
def acc_norm(logprobs: Sequence[float], options: Sequence[str], answer_index: int) -> MetricValues:
    """1 when the option with the highest log-likelihood per character is the answer."""
    return {"acc_norm": float(most_likely_per_character(logprobs, options) == answer_index)}


def choice_rule(value: str) -> Callable[[Sequence[float], Sequence[str]], int] | None:
    """How the choice metric whose headline value is `value` picks its option, if it says (None for a
    generation metric or a choice metric that does not pick one option)."""
    for metric in _METRICS.entries().values():
        if metric.headline == value and "choice" in metric.kinds:
            return metric.chooses
    return None


def choice_metrics(logprobs: Sequence[float], options: Sequence[str], answer_index: int) -> dict[str, float]:
    """Every choice metric (acc and acc_norm, and any a plugin adds) for one row, given each option's
    summed log-likelihood."""
    values: dict[str, Any] = {}
    for name in metric_names("choice"):
        values.update(_METRICS.get(name).function(logprobs, options, answer_index))
    return values


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(r) for r in references))


def _token_f1(prediction: str, reference: str) -> float:
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, references: Sequence[str]) -> float:
    return max(_token_f1(prediction, r) for r in references)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    scorer = _rouge_scorer()
    return max(scorer.score(target=r, prediction=prediction)["rougeL"].fmeasure for r in references)


def _one_value(name: str, score: Callable[[str, Sequence[str]], float]) -> GenerateMetric:
    """A generate metric yielding the single value `name`, from a scorer of (prediction, references)."""

    def metric(prediction: str, references: Sequence[str], row: Mapping[str, Any]) -> MetricValues:
        return {name: score(prediction, references)}

    return metric


register_metric("exact_match")(_one_value("exact_match", exact_match))
register_metric("f1")(_one_value("f1", f1))
register_metric("rouge_l")(_one_value("rouge_l", rouge_l))


def headline_value(metric: str) -> str:
    """The value a task declaring `metric` first is ranked by (the metric's registered headline)."""
    registered = _METRICS.lookup(metric)
    return registered.headline if registered else metric


def generate_metrics(
    prediction: str, references: Sequence[str], names: Sequence[str], row: Mapping[str, Any]
) -> MetricValues:
    values: MetricValues = {}
    for name in names:
        values.update(_METRICS.get(name).function(prediction, references, row))
    return values


def flatten(values: Sequence[float | list[float]]) -> list[float]:
    """Per-sample values as one list: lists (several judgements of a sample) are spread out."""
    flat: list[float] = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def mean_and_stderr(values: Sequence[float], seed: int) -> tuple[float, float]:
    """The mean and its bootstrap standard error (seeded, so a run record is reproducible)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1:
        return float(data[0]), 0.0
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, data.size, size=(BOOTSTRAP_RESAMPLES, data.size))].mean(axis=1)
    return float(data.mean()), float(resampled.std(ddof=1))
