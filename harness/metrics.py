"""Per-sample metrics and their aggregation, faithful to the reference implementations.

- acc / acc_norm: lm-eval's multiple-choice rule; acc_norm divides each option's log-likelihood
  by the option's length in characters (lm-eval's `acc_norm`, not a token count).
- exact_match / f1: SQuAD's normalisation (lower case, no punctuation, no articles, single spaces),
  maximum over the references.
- rouge_l: the Super-NaturalInstructions scorer: rouge-score's ROUGE-L F-measure with the Porter
  stemmer on the raw strings, maximum over the references.
Aggregates are means with a seeded bootstrap standard error.
"""

from __future__ import annotations

import importlib
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
BOOTSTRAP_RESAMPLES = 1000


def choice_metrics(logprobs: Sequence[float], options: Sequence[str], answer_index: int) -> dict[str, float]:
    """acc and acc_norm for one row, given each option's summed log-likelihood."""
    raw = np.asarray(logprobs, dtype=np.float64)
    lengths = np.asarray([float(len(o)) for o in options])
    return {
        "acc": float(int(np.argmax(raw)) == answer_index),
        "acc_norm": float(int(np.argmax(raw / lengths)) == answer_index),
    }


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


MetricValues = dict[str, float | list[float]]
"""A metric's per-sample result: one or more named values. A list holds several judgements of one
sample (IFEval's instruction-level checks); aggregation flattens lists, as lm-eval does."""

GenerateMetric = Callable[[str, Sequence[str], Mapping[str, Any]], MetricValues]

CHOICE_METRICS = ("acc", "acc_norm")

# Metric name -> function(prediction, references, row), or "module:function" for metrics whose
# dependencies are heavy (imported only when a task uses them).
GENERATE_METRICS: dict[str, GenerateMetric | str] = {
    "exact_match": lambda prediction, references, row: {"exact_match": exact_match(prediction, references)},
    "f1": lambda prediction, references, row: {"f1": f1(prediction, references)},
    "rouge_l": lambda prediction, references, row: {"rouge_l": rouge_l(prediction, references)},
    "niv2": "harness.benchmarks.niv2:niv2_metric",
    "ifeval": "harness.benchmarks.ifeval:ifeval_metric",
}


# A declared metric that yields several values ranks a task by this one (its headline number).
HEADLINE_VALUES = {"niv2": "niv2_rouge_l", "ifeval": "prompt_level_strict_acc"}


def headline_value(metric: str) -> str:
    """The value a task declaring `metric` first is ranked by (see HEADLINE_VALUES)."""
    return HEADLINE_VALUES.get(metric, metric)


def resolve_metric(name: str) -> GenerateMetric:
    entry = GENERATE_METRICS[name]
    if isinstance(entry, str):
        module, attribute = entry.split(":")
        entry = getattr(importlib.import_module(module), attribute)
    return entry


def generate_metrics(
    prediction: str, references: Sequence[str], names: Sequence[str], row: Mapping[str, Any]
) -> MetricValues:
    values: MetricValues = {}
    for name in names:
        values.update(resolve_metric(name)(prediction, references, row))
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
