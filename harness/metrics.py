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

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

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


GENERATE_METRIC_FUNCTIONS = {"exact_match": exact_match, "f1": f1, "rouge_l": rouge_l}


def generate_metrics(prediction: str, references: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    return {name: GENERATE_METRIC_FUNCTIONS[name](prediction, references) for name in names}


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
