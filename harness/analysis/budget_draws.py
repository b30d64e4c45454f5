"""Posterior-predictive draws of a budgeted matrix's uncomputed cells, for the intervals of the
budget estimator's template scores and distribution over templates.

The fitted model's plug-in scores answer "what is each template's expected score", but what a
full run reports is each template's realized mean, and an interval of expected scores misses two
things:

- Shrinkage pulls a template measured on a dozen cells toward the others, and the bias is in every
  bootstrap replicate alike, so the row bootstrap's interval does not see it: the template's own
  posterior uncertainty has to be drawn.
- An uncomputed cell is a 0/1 outcome, not a probability: a template predicted at 99% on 180 cells
  is at 100% with a sizeable chance (the tuned tiny model has 28 of 48 variants at exactly 100%),
  which an interval of expected scores never reaches.

So a draw perturbs each template's effects (delta_t and the contrasts of its class effects alpha_t) by a draw from
their posterior given the template's cells, the shared intercept, covariates and row difficulties
held at the fit (their uncertainty is what the row bootstrap's refits measure). It then draws each
uncomputed cell's outcome from its probability, when the metric is binary with one judgement a
cell (a score such as F1, or a cell of several IFEval judgements, keeps its probability: a
Bernoulli draw would exaggerate its noise). Computed cells are kept as observed in every draw.

The posterior is sampled by importance resampling from a Gaussian of twice the Laplace spread, not
taken as the Laplace Gaussian itself: a template whose computed cells are all right (or, with the
class term, all right on one class and all wrong on the other) has a posterior with a wall on one
side and the prior's tail on the other, and the symmetric Laplace draw puts half its mass beyond
the wall, scoring a template that always answers option A well below the 50% it scores on a
balanced task (measured: the 5% quantile of the tiny base model's variants at 42 against 50).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from harness.analysis.irt import Cells, Fit, Priors, template_hessian

_PROPOSALS = 400  # importance proposals per template; a draw resamples them by weight
_SPREAD = 2.0  # the proposal's spread over the Laplace one: its tails must cover the posterior's
_EM_ROUNDS = 50  # for the prior share of row-independent templates: a closed-form step, cheap


class TemplatePosterior:
    """Draws of each template's effects around the fit, delta_t and alpha_t's contrasts minus their
    fitted values, from their posterior given the template's cells (see the module docstring)."""

    def __init__(self, cells: Cells, features: np.ndarray, fitted: Fit, priors: Priors,
                 rng: np.random.Generator) -> None:
        eta = fitted.logits(features)[cells.template, cells.row]
        factors = np.linalg.cholesky(np.linalg.inv(template_hessian(cells, cells.weight * expit(eta) * expit(-eta),
                                                                    priors))) * _SPREAD
        width = factors.shape[1]
        noise = rng.standard_normal((_PROPOSALS, cells.templates, width))
        self.proposals = np.einsum("tij,ptj->pti", factors, noise)
        # Log weights: the template's log-likelihood and log-prior at the proposal, less the
        # proposal's log density (up to constants shared by a template's proposals).
        effects = np.concatenate([fitted.delta[:, None], fitted.alpha], axis=1)[None] + self.proposals
        sds = np.array([priors.template_sd] + [priors.class_sd] * (width - 1))
        log_weight = -0.5 * np.sum((effects / sds) ** 2, axis=2) + 0.5 * np.sum(noise ** 2, axis=2)
        self.contrast = cells.contrast()
        shift = self.proposals[:, cells.template, 0]
        known, _ = cells.class_index()
        by_class = self.proposals[:, :, 1:] @ self.contrast.T
        shift[:, known] += by_class[:, cells.template[known], cells.row_class[cells.row[known]]]
        moved = eta[None] + shift
        loss = (np.maximum(moved, 0.0) + np.log1p(np.exp(-np.abs(moved))) - cells.value * moved) * cells.weight
        by_template = np.zeros((cells.templates, len(eta)))
        by_template[cells.template, np.arange(len(eta))] = 1.0
        log_weight -= loss @ by_template.T
        top = log_weight.max(axis=0)
        weight = np.exp(log_weight - top)
        self.cumulative = np.cumsum(weight / weight.sum(axis=0), axis=0)
        # The template's cells' marginal likelihood under the model (its own effects integrated over
        # their prior): the mean importance weight, with the densities' normalizing constants.
        log_det = np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1)
        self.log_marginal = top + np.log(weight.mean(axis=0)) + log_det - np.log(sds).sum()

    def shift(self, row_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(templates x rows): one posterior draw of each template's effects, as a shift of every
        cell's logit (its delta draw plus, on a row of known class, its class effect's draw)."""
        templates = self.cumulative.shape[1]
        pick = np.minimum((self.cumulative < rng.random(templates)).sum(axis=0), _PROPOSALS - 1)
        effects = self.proposals[pick, np.arange(templates)]
        shift = np.repeat(effects[:, :1], len(row_class), axis=1)
        if effects.shape[1] > 1:
            shift += np.where(row_class >= 0, (effects[:, 1:] @ self.contrast.T)[:, np.maximum(row_class, 0)], 0.0)
        return shift


class RowIndependent:
    """The other kind of template: one whose answer does not depend on the row, only on its class.

    A small model often answers one option whatever the row in some wordings (17 of the tiny base
    model's 48 variants score exactly 50% on a balanced binary task), or, tuned, is right on every
    row in others (28 of the tuned one's 48 at 100%). Its cells are then a function of the row's
    class: every cell of a class is right or every one is wrong. The logistic model, even with its
    class term, predicts such a template at 95% rather than 100% on each class and, to fit them,
    widens the class prior until the templates that do read the rows are barely shrunk at all.

    So each template is a mixture: row-independent with probability `probability`, else the
    logistic model. A row-independent template follows one of a few patterns over the classes
    (`patterns`): always right, always wrong, or always option k (right on class k alone). Its
    computed cells can only be row-independent if they are binary and equal within each class,
    and then their likelihood is the prior weight of the patterns they agree with, against the
    logistic model's marginal likelihood of the cells. The prior share of row-independent templates
    and the patterns' weights are set by empirical Bayes (the EM fixed point over templates,
    smoothed). The weights matter: a tuned model's row-independent templates are right on every
    class, and at equal weights a template right on its 20 cells read as more likely a logistic one
    at 97% (the median of the tuned model's variants came out 3 points under the 100% most of them
    score); and a template wrong on the classes its few cells saw is, if row-independent, most
    likely one that always answers another option, right on the class it did not see (with 6
    cells a template of a three-class task, the template's observed 0% was its estimate)."""

    def __init__(self, cells: Cells, log_marginal: np.ndarray, binary: bool) -> None:
        self.patterns = patterns(cells.classes)
        agree = pattern_agreement(cells, self.patterns, binary)
        # The estimates add one template of each kind and one of each pattern (a uniform prior's
        # posterior mean, in effect): without it, where the cells barely tell the kinds apart (a
        # template right on its 15 computed cells among templates that score 60-90%), EM drives the
        # share to zero and an interval could never reach the 100% such a template may well score.
        share_prior, weights = 0.5, np.full(len(self.patterns), 1.0 / len(self.patterns))
        for _ in range(_EM_ROUNDS):
            probability, which = _posterior(share_prior, weights, agree, log_marginal)
            share_prior = float((probability.sum() + 1) / (cells.templates + 2))
            weights = (probability @ which + 1) / (probability.sum() + len(self.patterns))
        self.probability, self.which = _posterior(share_prior, weights, agree, log_marginal)
        # The cells' log-likelihood under the mixture, summed over templates, to compare priors by.
        with np.errstate(divide="ignore"):
            log_odds = np.log(share_prior / (1 - share_prior)) + np.log(agree @ weights) - log_marginal
        self.log_likelihood = float(np.sum(log_marginal + np.log1p(-share_prior) + np.logaddexp(0.0, log_odds)))
        self.row_class, self.shares = cells.row_class, cells.class_shares()

    def values(self, row_class: np.ndarray, by_class: np.ndarray | None = None) -> np.ndarray:
        """(templates x rows): a row-independent template's expected value on each row of these
        classes (or, given `by_class`, its templates x classes values); on a row of unknown class (no
        cell of it computed), its expectation over the classes' shares. A generation task's rows
        are all one class (-1 there is no class term, not an unknown class)."""
        by_class = self.which @ self.patterns if by_class is None else by_class
        if not len(self.shares):
            return np.repeat(by_class, len(row_class), axis=1)
        return np.where(row_class >= 0, by_class[:, np.maximum(row_class, 0)], (by_class @ self.shares)[:, None])

    def mixed(self, probabilities: np.ndarray) -> np.ndarray:
        """(templates x rows): each cell's expected value under the mixture."""
        weight = self.probability[:, None]
        return weight * self.values(self.row_class) + (1 - weight) * probabilities

    def choose(self, drawn: np.ndarray, row_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A predictive draw on rows of these classes: each template row-independent with its
        probability, following a pattern drawn from those its cells agree with, else `drawn`."""
        independent = rng.random(len(self.probability)) < self.probability
        pick = np.minimum((np.cumsum(self.which, axis=1) < rng.random((len(self.which), 1))).sum(axis=1),
                          len(self.patterns) - 1)
        return np.where(independent[:, None], self.values(row_class, self.patterns[pick]), drawn)


def patterns(classes: int) -> np.ndarray:
    """(patterns x classes, or x 1 without a class term): a row-independent template's value on
    each class: always right, always wrong, and, on a choice task, always option k."""
    width = max(classes, 1)
    rows = [np.ones(width), np.zeros(width)] + (list(np.eye(classes)) if classes >= 2 else [])
    return np.array(rows)


def pattern_agreement(cells: Cells, pattern_values: np.ndarray, binary: bool) -> np.ndarray:
    """(templates x patterns): whether template t's computed cells are what pattern p gives on every
    class they saw (never for a template with no cell, nor for a metric that is not binary)."""
    width = max(cells.classes, 1)
    groups = cells.template * width + np.maximum(cells.row_class[cells.row], 0)
    total = np.bincount(groups, cells.weight, cells.templates * width).reshape(cells.templates, width)
    ones = np.bincount(groups, cells.weight * cells.value, cells.templates * width).reshape(cells.templates, width)
    seen = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        share = ones / total
    agree = np.all(~seen[:, None, :] | (share[:, None, :] == pattern_values[None]), axis=2)
    return agree & binary & seen.any(axis=1)[:, None]


def _posterior(share_prior: float, weights: np.ndarray, agree: np.ndarray,
               log_marginal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each template's posterior probability of row independence at these prior shares, and each
    pattern's posterior weight given that it is (templates x patterns; the prior's where none agrees)."""
    likelihood = agree @ weights
    odds = share_prior / (1 - share_prior) * likelihood * np.exp(np.clip(-log_marginal, -700, 700))
    which = np.where(likelihood[:, None] > 0, agree * weights / np.maximum(likelihood, 1e-300)[:, None], weights)
    return odds / (1 + odds), which


SPREAD_SHAPE, SPREAD_SCALE = 2.0, 0.1  # the samplers' inverse-gamma prior of each variance (see budget_bayes)


def draw_variance(rng: np.random.Generator, values: np.ndarray) -> float:
    """A sampler's draw of a variance from its conditional given the effects it spreads, under the
    InvGamma(SPREAD_SHAPE, SPREAD_SCALE) prior."""
    flat = np.ravel(values)
    return 1.0 / rng.gamma(SPREAD_SHAPE + flat.size / 2, 1.0 / (SPREAD_SCALE + 0.5 * float(flat @ flat)))


def draw_kinds(log_likelihood: np.ndarray, agree: np.ndarray, share: float, weights: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """A sampler's step for the templates' kinds: each template's kind (0 the model, 1 + p pattern p)
    given the model's log-likelihood of its cells at the current effects and the prior share and
    weights of the patterns its cells agree with; then the share of row-independent templates and
    the patterns' weights given the kinds (uniform priors). Returns (kinds, share, weights)."""
    with np.errstate(divide="ignore"):
        log_weight = np.concatenate([np.log1p(-share) + log_likelihood[:, None],
                                     np.where(agree, np.log(share) + np.log(weights)[None], -np.inf)], axis=1)
    weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    cumulative = np.cumsum(weight / weight.sum(axis=1, keepdims=True), axis=1)
    kind = np.minimum((cumulative < rng.random((len(weight), 1))).sum(axis=1), agree.shape[1])
    independent = kind > 0
    share = rng.beta(1 + independent.sum(), 1 + (~independent).sum())
    return kind, share, rng.dirichlet(1 + np.bincount(kind[independent] - 1, minlength=agree.shape[1]))


def draw_classes(row_class: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's class, drawn from the classes' shares where unknown: one draw for every template
    (a row's gold option does not depend on the wording), so the templates that always answer one
    option move together, as they do in the full run."""
    unknown = row_class < 0
    if not len(shares) or not unknown.any():
        return row_class
    drawn = row_class.copy()
    drawn[unknown] = np.minimum(np.searchsorted(np.cumsum(shares), rng.random(int(unknown.sum()))), len(shares) - 1)
    return drawn


def outcomes(logits: np.ndarray, binary: bool, rng: np.random.Generator) -> np.ndarray:
    """(templates x rows): each cell's drawn outcome at these logits: 0/1 for a binary metric, else
    the probability itself."""
    probabilities = expit(logits)
    return (rng.random(probabilities.shape) < probabilities) * 1.0 if binary else probabilities
