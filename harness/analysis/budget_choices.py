"""Posterior draws of a budgeted choice task's full-run template scores from the option each
computed cell chose, not only whether it was right: `harness.analysis.budget`'s
`estimator="choices"`.

Why the option: on a task of three or more options a wrong cell also says which wrong option the
wording led to, and what mostly decides a small model's score on such a task is which option a
wording leans to. SmolLM2-135M's CB formats that answer "maybe" on most rows score 9 to 21% (5 of
the 56 rows are "neutral"); one measured on 6 cells that answered "maybe" on four rows of the other
classes and got its one neutral row right is, to a model of right and wrong, a format that reads the
rows at 17% and was lucky on five of them, and both estimators of the logistic model put such
formats near 40% (bench/RESULTS.md). The options it chose say it leans to "maybe" on every cell.
On a two-option task the chosen option and the gold one say no more than right or wrong, and the
model below is the logistic one of `harness.analysis.budget_bayes` (its class effects written as
option biases), so this adds nothing there but the template families.

The model: row r's gold option g_r, and template t chooses option k with probability

    softmax_k( [B (a + b_t + c_r)]_k + [k = g_r] (mu + theta_t) ),

B the sum-to-zero contrast basis (`harness.analysis.irt.contrasts`), so a, b_t and c_r are biases
toward the options: the model's own (a), the wording's (b_t), the row's (c_r: an option a row pulls
every wording toward; its pull toward the gold one is the row's ease); mu + theta_t is how much the
wording reads the row. A generated variant keeps most of its source's behaviour (six of CB's
variants of one wording answer "maybe" on all 56 rows), so templates come in families, a
hand-written template and its variants (`tags.extra.format.source`), and a template's theta_t and
b_t are Gaussian around its family's, the family's around zero. The spreads have the inverse-gamma
prior of `budget_bayes`, InvGamma(2, 0.1) on each variance. As there, a template may instead be
row-independent (always option k, or always right) where its computed choices agree, its kind
sampled with the rest.

Sampling is Metropolis-within-Gibbs: a random-walk step of every template's (theta_t, b_t) block at
once (the blocks are independent given the rows), then of every row's c_r, then of (mu, a); the
family means and the spreads are conjugate draws, the kinds as in `budget_bayes`. Each block's step
size is tuned toward an acceptance of 0.3 during the burn-in and then fixed. A kept sweep completes
the matrix: every uncomputed cell's choice is drawn at that sweep's probabilities and scored against
the row's gold option (drawn from the options' shares, once for every template, for a row no
computed cell names). Computed cells keep their observed values.

Given a `KnownPrior` (`fit_prior`: the posterior means of a full run's hyperparameters), the chain
holds the spreads, (mu, a) and the row-independent share and pattern weights fixed and samples the
rest: the exact posterior of worlds drawn from that prior, whose median of each statistic no
estimator can beat on them in expected absolute error (`bench/bench_budget_bound.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax

from harness.analysis.budget_draws import draw_classes, draw_kinds, draw_variance
from harness.analysis.budget_matrix import CellMatrix
from harness.analysis.irt import contrasts

# Sweeps discarded, step sizes tuned meanwhile: from 1,000 to 4,000 the CB error at a tenth fell from 5.1 to 4.2.
BURN_IN = 2000
_GLOBAL_SD = 10.0  # logits: mu's and a's prior, flat over any score
_TARGET_ACCEPTANCE, _ADAPT_RATE = 0.3, 0.05


def families(templates: Sequence[str], tags: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Each template's family index: a generated variant's source template (`tags.extra.format.source`),
    else the template itself."""
    names = []
    for template, tag in zip(templates, tags, strict=True):
        extra = tag.get("extra") if isinstance(tag.get("extra"), Mapping) else {}
        layout = extra.get("format") if isinstance(extra.get("format"), Mapping) else {}
        names.append(str(layout.get("source", template)))
    return np.unique(names, return_inverse=True)[1]


@dataclass(frozen=True)
class KnownPrior:
    """The option model's hyperparameters held fixed: each spread (`variance`, keyed as the chain's),
    the global reading mu and lean a, the share of row-independent templates and the weights of
    their patterns (always option k, then always right)."""

    variance: Mapping[str, float]
    mu: float
    lean: np.ndarray
    share: float
    weights: np.ndarray


class _Chain:
    """The sampler's state and one sweep of it, over the computed cells' (template, row, choice)."""

    def __init__(self, matrix: CellMatrix, options: int, known: KnownPrior | None = None) -> None:
        self.template, self.row = np.nonzero(matrix.computed)
        self.choice = matrix.choices[self.template, self.row]
        self.gold = matrix.row_classes[self.row]
        self.templates, self.rows, self.options = len(matrix.templates), len(matrix.rows), options
        self.basis = contrasts(options)
        self.family = families(matrix.templates, matrix.tags)
        self.family_size = np.bincount(self.family)
        width = options - 1
        self.theta, self.bias = np.zeros(self.templates), np.zeros((self.templates, width))
        self.family_theta, self.family_bias = np.zeros(len(self.family_size)), np.zeros((len(self.family_size), width))
        self.pull, self.mu, self.lean = np.zeros((self.rows, width)), 0.0, np.zeros(width)
        # theta's, b's, their families', c's variances
        self.variance = {"theta": 0.25, "bias": 1.0, "family_theta": 0.25, "family_bias": 1.0, "pull": 1.0}
        self.step = {"template": np.full(self.templates, 0.5), "row": np.full(self.rows, 0.5), "global": 0.2}
        # Each template's kind: 0 the model, 1 + k always option k, 1 + options always right.
        agree = np.zeros((self.templates, options + 1), dtype=bool)
        seen = np.bincount(self.template, minlength=self.templates) > 0
        for k in range(options):
            agree[:, k] = seen & (np.bincount(self.template, self.choice != k, self.templates) == 0)
        agree[:, options] = seen & (np.bincount(self.template, self.choice != self.gold, self.templates) == 0)
        self.agree = agree
        self.kind = np.zeros(self.templates, dtype=np.int64)
        self.independent_share, self.pattern_weights = 0.5, np.full(options + 1, 1.0 / (options + 1))
        self.known = known
        if known is not None:
            self.variance, self.mu, self.lean = dict(known.variance), known.mu, np.array(known.lean, dtype=float)
            self.independent_share, self.pattern_weights = known.share, np.array(known.weights, dtype=float)
        self.cell_log_likelihood = self._cell_log_likelihood(self.theta, self.bias, self.pull, self.mu, self.lean)

    def _cell_log_likelihood(self, theta: np.ndarray, bias: np.ndarray, pull: np.ndarray, mu: float,
                             lean: np.ndarray) -> np.ndarray:
        cells = np.arange(len(self.choice))
        logits = (bias[self.template] + pull[self.row] + lean) @ self.basis.T
        logits[cells, self.gold] += mu + theta[self.template]
        return log_softmax(logits, axis=1)[cells, self.choice]

    def sweep(self, rng: np.random.Generator, adapt: bool) -> None:
        reads = self.kind[self.template] == 0
        self._templates(rng, reads, adapt)
        self._rows(rng, reads, adapt)
        if self.known is None:
            self._global(rng, reads, adapt)
        self._families(rng)
        if self.known is None:
            self._spreads(rng)
        if self.agree.any():
            self._kinds(rng)

    def _accept(self, log_ratio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.log(rng.random(log_ratio.shape)) < log_ratio

    def _take(self, kind: str, log_ratio: np.ndarray, unit: np.ndarray, proposed: np.ndarray,
              rng: np.random.Generator, adapt: bool) -> np.ndarray:
        """Accept each unit's (template's or row's) proposal by its log ratio, keep the accepted
        units' cell log-likelihoods (`unit`: each cell's unit), and during burn-in move each unit's
        step toward the target acceptance; returns which units were accepted."""
        accepted = self._accept(log_ratio, rng)
        self.cell_log_likelihood = np.where(accepted[unit], proposed, self.cell_log_likelihood)
        if adapt:
            self.step[kind] = self.step[kind] * np.exp(_ADAPT_RATE * (accepted - _TARGET_ACCEPTANCE))
        return accepted

    def _templates(self, rng: np.random.Generator, reads: np.ndarray, adapt: bool) -> None:
        step = self.step["template"]
        theta = self.theta + step * rng.standard_normal(self.templates)
        bias = self.bias + step[:, None] * rng.standard_normal(self.bias.shape)
        proposed = self._cell_log_likelihood(theta, bias, self.pull, self.mu, self.lean)
        centre_theta, centre_bias = self.family_theta[self.family], self.family_bias[self.family]
        prior_change = (((theta - centre_theta) ** 2 - (self.theta - centre_theta) ** 2) / self.variance["theta"]
                        + (np.sum((bias - centre_bias) ** 2, axis=1) - np.sum((self.bias - centre_bias) ** 2, axis=1))
                        / self.variance["bias"])
        log_ratio = (np.bincount(self.template, (proposed - self.cell_log_likelihood) * reads, self.templates)
                     - 0.5 * prior_change)
        accepted = self._take("template", log_ratio, self.template, proposed, rng, adapt)
        self.theta = np.where(accepted, theta, self.theta)
        self.bias = np.where(accepted[:, None], bias, self.bias)

    def _rows(self, rng: np.random.Generator, reads: np.ndarray, adapt: bool) -> None:
        step = self.step["row"]
        pull = self.pull + step[:, None] * rng.standard_normal(self.pull.shape)
        proposed = self._cell_log_likelihood(self.theta, self.bias, pull, self.mu, self.lean)
        log_ratio = (np.bincount(self.row, (proposed - self.cell_log_likelihood) * reads, self.rows)
                     - 0.5 * (np.sum(pull ** 2, axis=1) - np.sum(self.pull ** 2, axis=1)) / self.variance["pull"])
        accepted = self._take("row", log_ratio, self.row, proposed, rng, adapt)
        self.pull = np.where(accepted[:, None], pull, self.pull)

    def _global(self, rng: np.random.Generator, reads: np.ndarray, adapt: bool) -> None:
        step = self.step["global"]
        mu = self.mu + step * rng.standard_normal()
        lean = self.lean + step * rng.standard_normal(len(self.lean))
        proposed = self._cell_log_likelihood(self.theta, self.bias, self.pull, mu, lean)
        log_ratio = (np.sum((proposed - self.cell_log_likelihood) * reads)
                     - 0.5 * (mu ** 2 - self.mu ** 2 + lean @ lean - self.lean @ self.lean) / _GLOBAL_SD ** 2)
        accepted = bool(self._accept(np.array(log_ratio), rng))
        if accepted:
            self.mu, self.lean, self.cell_log_likelihood = mu, lean, proposed
        if adapt:
            self.step["global"] = step * np.exp(_ADAPT_RATE * (accepted - _TARGET_ACCEPTANCE))

    def _families(self, rng: np.random.Generator) -> None:
        """The family means given their templates' effects (Gaussian), from the templates that read
        the rows."""
        reads = (self.kind == 0) * 1.0
        count = np.bincount(self.family, reads, len(self.family_size))
        precision = count / self.variance["theta"] + 1.0 / self.variance["family_theta"]
        total = np.bincount(self.family, self.theta * reads, len(self.family_size))
        noise = rng.standard_normal(len(precision))
        self.family_theta = total / self.variance["theta"] / precision + noise / np.sqrt(precision)
        precision = count / self.variance["bias"] + 1.0 / self.variance["family_bias"]
        total = np.stack([np.bincount(self.family, column * reads, len(self.family_size)) for column in self.bias.T],
                         axis=1)
        self.family_bias = (total / self.variance["bias"] / precision[:, None]
                            + rng.standard_normal(self.family_bias.shape) / np.sqrt(precision)[:, None])

    def _spreads(self, rng: np.random.Generator) -> None:
        """Every spread given the effects it spreads (inverse gamma), from the templates that read the rows."""
        model = self.kind == 0
        self.variance["theta"] = draw_variance(rng, (self.theta - self.family_theta[self.family])[model])
        self.variance["bias"] = draw_variance(rng, (self.bias - self.family_bias[self.family])[model])
        self.variance["family_theta"] = draw_variance(rng, self.family_theta)
        self.variance["family_bias"] = draw_variance(rng, self.family_bias)
        self.variance["pull"] = draw_variance(rng, self.pull)

    def _kinds(self, rng: np.random.Generator) -> None:
        """Each template's kind given its effects (`budget_draws.draw_kinds`), by the model's
        likelihood of its cells' choices at them."""
        log_likelihood = np.bincount(self.template, self.cell_log_likelihood, self.templates)
        kind, share, weights = draw_kinds(log_likelihood, self.agree, self.independent_share, self.pattern_weights,
                                          rng)
        self.kind = kind
        if self.known is None:
            self.independent_share, self.pattern_weights = share, weights

    def right(self, gold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(templates x rows): every cell's drawn judgement, 1 where its drawn choice is the gold
        option of these rows."""
        choice = draw_choices(self.bias, self.pull, self.lean, self.mu + self.theta, gold, rng)
        kind = self.kind[:, None]
        choice = np.where((kind > 0) & (kind <= self.options), kind - 1, choice)
        return ((choice == gold[None]) | (kind == self.options + 1)) * 1.0


def draw_choices(bias: np.ndarray, pull: np.ndarray, lean: np.ndarray, reading: np.ndarray, gold: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """(templates x rows): each cell's option drawn at the model's probabilities, given every
    template's bias and reading (mu + theta_t), every row's pull and gold option, and the lean."""
    options = bias.shape[1] + 1
    logits = (bias[:, None, :] + pull[None] + lean) @ contrasts(options).T
    logits[:, np.arange(len(gold)), gold] += reading[:, None]
    cumulative = np.cumsum(np.exp(log_softmax(logits, axis=2)), axis=2)
    return np.minimum((cumulative < rng.random(cumulative.shape[:2] + (1,))).sum(axis=2), options - 1)


def fit_prior(matrix: CellMatrix, rng: np.random.Generator, sweeps: int = 500,
              burn_in: int = BURN_IN) -> KnownPrior:
    """The posterior means of the model's hyperparameters over `sweeps` kept sweeps: on a full run,
    a prior to draw worlds of its kind from."""
    chain = _Chain(matrix, matrix.options)
    variance = dict.fromkeys(chain.variance, 0.0)
    mu, lean, share, weights = 0.0, np.zeros_like(chain.lean), 0.0, np.zeros_like(chain.pattern_weights)
    for sweep in range(burn_in + sweeps):
        chain.sweep(rng, adapt=sweep < burn_in)
        if sweep >= burn_in:
            variance = {key: value + chain.variance[key] / sweeps for key, value in variance.items()}
            mu, lean = mu + chain.mu / sweeps, lean + chain.lean / sweeps
            share, weights = share + chain.independent_share / sweeps, weights + chain.pattern_weights / sweeps
    if not chain.agree.any():
        # No template's cells agree with a pattern, so every kind is the model's and the chain leaves
        # the share unsampled: its mean given that, Beta(1, 1 + templates)'s, and the weights' prior.
        share, weights = 1.0 / (chain.templates + 2), np.full(len(weights), 1.0 / len(weights))
    return KnownPrior(variance, mu, lean, share, weights)


def score_draws(matrix: CellMatrix, draws: int, rng: np.random.Generator, burn_in: int = BURN_IN,
                known: KnownPrior | None = None) -> np.ndarray:
    """(draws x templates): posterior draws of each template's full-run score, its mean over every
    row with the computed cells as observed (see the module docstring), under the model's priors or,
    given `known`, with its hyperparameters fixed there. The matrix must hold the computed cells'
    choices (`CellMatrix.choices`) and one judgement a cell."""
    options = matrix.options
    chain = _Chain(matrix, options, known)
    gold = matrix.row_classes
    unknown = gold < 0
    shares = np.bincount(gold[~unknown], minlength=options) / max(int((~unknown).sum()), 1)
    values = np.where(matrix.computed, matrix.sums, 0.0)
    out = np.empty((draws, len(matrix.templates)))
    for sweep in range(burn_in + draws):
        chain.sweep(rng, adapt=sweep < burn_in)
        if sweep < burn_in:
            continue
        out[sweep - burn_in] = np.where(matrix.computed, values,
                                        chain.right(draw_classes(gold, shares, rng), rng)).mean(axis=1)
    return out


def draw_world(matrix: CellMatrix, prior: KnownPrior, rng: np.random.Generator) -> CellMatrix:
    """A full matrix of `matrix`'s templates, families and rows drawn from the model at `prior`, its
    gold options at the shares of `matrix`'s: the story the sampler's posterior inverts, to measure
    an estimator on worlds whose truth is known."""
    templates, rows, options = len(matrix.templates), len(matrix.rows), matrix.options
    family = families(matrix.templates, matrix.tags)
    count, width, spread = int(family.max()) + 1, options - 1, {k: np.sqrt(v) for k, v in prior.variance.items()}
    family_theta = rng.normal(0.0, spread["family_theta"], count)
    family_bias = rng.normal(0.0, spread["family_bias"], (count, width))
    theta = family_theta[family] + rng.normal(0.0, spread["theta"], templates)
    bias = family_bias[family] + rng.normal(0.0, spread["bias"], (templates, width))
    pull = rng.normal(0.0, spread["pull"], (rows, width))
    known = matrix.row_classes[matrix.row_classes >= 0]
    gold = draw_classes(np.full(rows, -1), np.bincount(known, minlength=options) / max(len(known), 1), rng)
    choice = draw_choices(bias, pull, prior.lean, prior.mu + theta, gold, rng)
    # A row-independent format always answers option k, or (the last pattern) always right.
    independent = rng.random(templates) < prior.share
    pattern = np.minimum(np.searchsorted(np.cumsum(prior.weights), rng.random(templates)), options)
    fixed = np.where(pattern[:, None] < options, pattern[:, None], gold[None])
    choice = np.where(independent[:, None], fixed, choice)
    ones = np.ones((templates, rows))
    return CellMatrix(matrix.task, matrix.shots, matrix.metric, matrix.templates, matrix.rows, matrix.tags,
                      (choice == gold[None]) * 1.0, ones, ones.astype(bool), gold, choice, options)
