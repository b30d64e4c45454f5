"""Posterior-predictive draws of a budgeted matrix's uncomputed cells, for the budget estimator's
distribution over templates and its intervals.

The fitted model's plug-in scores answer "what is each template's expected score", but what a
full run reports is each template's realized mean, and a quantile over templates of shrunken
expected scores is not the quantile of the realized ones:

- Shrinkage pulls a template measured on a dozen cells toward the others, so plug-in quantiles are
  under-dispersed (the tails come in), and the bias is in every bootstrap replicate alike, so the
  row bootstrap's interval does not see it.
- An uncomputed cell is a 0/1 outcome, not a probability: a template predicted at 99% on 180 cells
  is at 100% with a sizeable chance (the tuned tiny model has 28 of 48 variants at exactly 100%),
  which an interval of expected scores never reaches.

So a draw perturbs each template's effects (delta_t and its class effects alpha_t) by a draw from
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

from harness.analysis.irt import Cells, Fit, Priors

_PROPOSALS = 400  # importance proposals per template; a draw resamples them by weight
_SPREAD = 2.0  # the proposal's spread over the Laplace one: its tails must cover the posterior's
_EM_ROUNDS = 50  # for the prior share of row-independent templates: a closed-form step, cheap


def _laplace_factors(cells: Cells, information: np.ndarray, priors: Priors) -> np.ndarray:
    """(templates x (1 + classes) x (1 + classes)): each template's Cholesky factor of the Laplace
    posterior covariance of (delta_t, alpha_t1 .. alpha_tK), the inverse of its block of the
    penalized Hessian at the fit. A template with no computed cell gets its prior's spread."""
    classes = cells.classes
    hessian = np.zeros((cells.templates, 1 + classes, 1 + classes))
    hessian[:, 0, 0] = np.bincount(cells.template, information, cells.templates) + priors.template_sd ** -2.0
    if classes:
        known, pair = cells.class_index()
        by_class = np.bincount(pair, information[known], cells.templates * classes).reshape(cells.templates, classes)
        hessian[:, 0, 1:] = hessian[:, 1:, 0] = by_class
        diagonal = np.arange(1, 1 + classes)
        hessian[:, diagonal, diagonal] = by_class + priors.class_sd ** -2.0
    return np.linalg.cholesky(np.linalg.inv(hessian))


class TemplatePosterior:
    """Draws of each template's effects around the fit, (delta_t, alpha_t1 .. alpha_tK) minus
    their fitted values, from their posterior given the template's cells (see the module docstring)."""

    def __init__(self, cells: Cells, features: np.ndarray, fitted: Fit, priors: Priors,
                 rng: np.random.Generator) -> None:
        eta = fitted.logits(features)[cells.template, cells.row]
        factors = _laplace_factors(cells, cells.weight * expit(eta) * expit(-eta), priors) * _SPREAD
        width = factors.shape[1]
        noise = rng.standard_normal((_PROPOSALS, cells.templates, width))
        self.proposals = np.einsum("tij,ptj->pti", factors, noise)
        # Log weights: the template's log-likelihood and log-prior at the proposal, less the
        # proposal's log density (up to constants shared by a template's proposals).
        effects = np.concatenate([fitted.delta[:, None], fitted.alpha], axis=1)[None] + self.proposals
        sds = np.array([priors.template_sd] + [priors.class_sd] * (width - 1))
        log_weight = -0.5 * np.sum((effects / sds) ** 2, axis=2) + 0.5 * np.sum(noise ** 2, axis=2)
        shift = self.proposals[:, cells.template, 0]
        known, _ = cells.class_index()
        shift[:, known] += self.proposals[:, cells.template[known], 1 + cells.row_class[cells.row[known]]]
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
            shift += np.where(row_class >= 0, effects[:, 1 + np.maximum(row_class, 0)], 0.0)
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
    logistic model. A template's computed cells can only be row-independent if they are binary
    and equal within each class (a generation task's rows are all one class); the likelihood of
    that is 1/2 per class seen (each class's answer right or wrong), against the logistic model's
    marginal likelihood of the cells. The prior share of row-independent templates is set by
    empirical Bayes (the EM fixed point over templates, smoothed). A row-independent template's uncomputed
    cell is its class's value, or its observed mean on a row whose class it has not seen."""

    def __init__(self, cells: Cells, log_marginal: np.ndarray, binary: bool) -> None:
        groups = cells.template * max(cells.classes, 1) + np.maximum(cells.row_class[cells.row], 0)
        size = cells.templates * max(cells.classes, 1)
        seen = np.bincount(groups, cells.weight, size) > 0
        ones = np.bincount(groups, cells.weight * cells.value, size)
        total = np.bincount(groups, cells.weight, size)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = ones / total
        equal = ~seen | (share == 0) | (share == 1)
        possible = binary & equal.reshape(cells.templates, -1).all(axis=1) & seen.reshape(cells.templates, -1).any(1)
        log_constant = -np.log(2.0) * seen.reshape(cells.templates, -1).sum(axis=1)
        # The posterior odds of row independence at a prior share pi, as pi / (1 - pi) * ratio.
        ratio = np.where(possible, np.exp(np.clip(log_constant - log_marginal, -700, 700)), 0.0)
        # The share's estimate adds one template of each kind (a uniform prior's posterior mean, in
        # effect): without it, where the cells barely tell the kinds apart (a template right on its
        # 15 computed cells among templates that score 60-90%), EM drives the share to zero and an
        # interval could never reach the 100% such a template may well score.
        share_prior = 0.5
        for _ in range(_EM_ROUNDS):
            odds = share_prior / (1 - share_prior) * ratio
            share_prior = float((np.sum(odds / (1 + odds)) + 1) / (cells.templates + 2))
        odds = share_prior / (1 - share_prior) * ratio
        self.probability = odds / (1 + odds)
        template_mean = np.bincount(cells.template, cells.weight * cells.value, cells.templates) / np.maximum(
            np.bincount(cells.template, cells.weight, cells.templates), 1e-300)
        by_class = np.where(seen, np.nan_to_num(share), template_mean.repeat(max(cells.classes, 1))).reshape(
            cells.templates, -1)
        # A generation task's rows are all one class (-1 there is no class term, not an unknown class).
        self.values = np.where((cells.row_class >= 0) | (cells.classes == 0),
                               by_class[:, np.maximum(cells.row_class, 0)], template_mean[:, None])

    def mixed(self, probabilities: np.ndarray) -> np.ndarray:
        """(templates x rows): each cell's expected value under the mixture."""
        weight = self.probability[:, None]
        return weight * self.values + (1 - weight) * probabilities

    def choose(self, drawn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A predictive draw: each template row-independent with its probability, else `drawn`."""
        independent = rng.random(len(self.probability)) < self.probability
        return np.where(independent[:, None], self.values, drawn)


def outcomes(logits: np.ndarray, binary: bool, rng: np.random.Generator) -> np.ndarray:
    """(templates x rows): each cell's drawn outcome at these logits: 0/1 for a binary metric, else
    the probability itself."""
    probabilities = expit(logits)
    return (rng.random(probabilities.shape) < probabilities) * 1.0 if binary else probabilities
