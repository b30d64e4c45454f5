"""Posterior draws of a budgeted matrix's full-run template scores, from a Gibbs sampler of the
logistic model: `harness.analysis.budget`'s `estimator="bayes"`.

The model is `harness.analysis.irt`'s without covariates: each computed cell holds n judgements
of which a share y are right, with

    logit P(right) = mu + delta_t + alpha_{t, class(r)} - beta_r,

delta_t the template's effect, alpha_t its effects on the row classes (in `contrasts`' basis, so
they sum to zero), beta_r the row's difficulty; Gaussian priors on all of them, and on each of the
three spreads an inverse-gamma prior, InvGamma(2, 0.1): its mean, 0.1 in variance (0.3 logits in
spread), is a small effect, its tail allows the several logits of class effects a model that
leans to one option has, and 48 templates or 50 rows outweigh it. As in the plug-in estimate, a
template may instead be row-independent (`harness.analysis.budget_draws.patterns`: always right,
always wrong, always option k) where its binary cells agree with the pattern; its kind is sampled
with the rest, the share of such templates and the patterns' weights under uniform priors.

Where the plug-in estimate fixes the row difficulties and the spreads at their penalized fit and
adds the rest of the uncertainty by a bootstrap over rows, this samples them too, so a score's
uncertainty includes that of the difficulties of the rows it was not computed on (about 5 cells
each at a tenth of the cells of 48 templates) and of how far templates differ. What that buys is
measured in bench/RESULTS.md ("The posterior-draw estimator"): at a tenth of the cells its quantile
intervals cover more often on SmolLM2-135M's RTE and COPA formats, its errors are lower there and
higher on CB and on one of the tiny models' variant sets, so it is not the default.

Polya-Gamma augmentation (Polson, Scott and Windle 2013) makes every conditional Gaussian: given
omega_c ~ PG(n_c, eta_c) for each cell, a cell is a Gaussian observation of its linear predictor
with precision omega_c and mean (y_c - 1/2) n_c / omega_c. Each sweep draws the omegas, then every
template's (delta_t, alpha_t) block at once (a few-by-few Gaussian per template), every row's
difficulty, the intercept, and the spreads. A share y that is not 0 or 1 (F1, ROUGE; several IFEval
judgements in one cell) enters as n trials with yn successes, the same quasi-binomial likelihood the
penalized fit uses.

A kept sweep then completes the matrix: every uncomputed cell's outcome is drawn at that sweep's
probability when the metric is binary with one judgement a cell, and is the probability itself
otherwise (a Bernoulli draw would exaggerate a fractional score's noise). A row no computed cell
names has no known class; each sweep draws it from the classes' shares, once for every template.
Computed cells are always their observed values, so the draws are of the full run's scores.
"""

from __future__ import annotations

import numpy as np
from polyagamma import random_polyagamma
from scipy.special import expit

from harness.analysis.budget_draws import draw_classes, draw_kinds, draw_variance, pattern_agreement, patterns
from harness.analysis.budget_matrix import CellMatrix
from harness.analysis.irt import Cells

BURN_IN = 500  # sweeps discarded: from zero effects the chain settles within ~100 on the benchmark's runs
_MU_SD = 10.0  # logits: the intercept's prior, flat over any score


class _Design:
    """The computed cells' fixed quantities: which template and row, trials n, the centred
    successes kappa = (y - 1/2) n, and each cell's derivative of its logit in its template's
    (delta_t, alpha_t) block (1, then its class's row of the contrast basis; zeros for a row of
    unknown class)."""

    def __init__(self, cells: Cells) -> None:
        self.cells = cells
        self.template, self.row = cells.template, cells.row
        self.trials = cells.weight
        self.kappa = (cells.value - 0.5) * cells.weight
        self.contrast = cells.contrast()
        self.width = 1 + self.contrast.shape[1]
        self.block = np.zeros((len(cells.value), self.width))
        self.block[:, 0] = 1.0
        known, _ = cells.class_index()
        self.block[known, 1:] = self.contrast[cells.row_class[cells.row[known]]]
        self.outer = self.block[:, :, None] * self.block[:, None, :]


class _Chain:
    """The sampler's state and one sweep of it."""

    def __init__(self, design: _Design, binary: bool) -> None:
        cells = design.cells
        self.design = design
        self.own = np.zeros((cells.templates, design.width))  # (delta_t, alpha_t) per template
        self.beta = np.zeros(cells.rows)
        self.mu = 0.0
        self.variances = np.ones(design.width)  # delta's, then alpha's (one spread for every contrast)
        self.variances[0] = 0.25
        self.row_variance = 1.0
        # Each template's kind: 0 for the logistic model, 1 + p for row-independent pattern p.
        self.patterns = patterns(cells.classes)
        self.agree = pattern_agreement(cells, self.patterns, binary)
        self.kind = np.zeros(cells.templates, dtype=np.int64)
        self.independent_share = 0.5
        self.pattern_weights = np.full(len(self.patterns), 1.0 / len(self.patterns))

    def template_part(self) -> np.ndarray:
        return np.sum(self.own[self.design.template] * self.design.block, axis=1)

    def sweep(self, rng: np.random.Generator) -> None:
        d = self.design
        cells = d.cells
        eta = self.mu + self.template_part() - self.beta[d.row]
        # A row-independent template's cells say nothing of the logistic model: they drop out (omega
        # and kappa 0), and its own effects are drawn from their prior.
        reads = self.kind[d.template] == 0
        omega = random_polyagamma(d.trials, z=eta, random_state=rng) * reads
        kappa = d.kappa * reads
        # Template blocks: the Gaussian of (delta_t, alpha_t) given everything else.
        offset = self.mu - self.beta[d.row]
        precision = np.zeros((cells.templates, d.width, d.width))
        np.add.at(precision, d.template, omega[:, None, None] * d.outer)
        precision += np.diag(1.0 / self.variances)[None]
        target = np.zeros((cells.templates, d.width))
        np.add.at(target, d.template, (kappa - omega * offset)[:, None] * d.block)
        factor = np.linalg.cholesky(precision)
        mean = np.linalg.solve(precision, target[:, :, None])[:, :, 0]
        noise = rng.standard_normal((cells.templates, d.width))
        self.own = mean + np.linalg.solve(np.swapaxes(factor, 1, 2), noise[:, :, None])[:, :, 0]
        # Rows: beta_r enters with a minus sign.
        offset = self.mu + self.template_part()
        row_precision = np.bincount(d.row, omega, cells.rows) + 1.0 / self.row_variance
        row_target = -np.bincount(d.row, kappa - omega * offset, cells.rows)
        self.beta = row_target / row_precision + rng.standard_normal(cells.rows) / np.sqrt(row_precision)
        # Intercept.
        offset = self.template_part() - self.beta[d.row]
        mu_precision = omega.sum() + _MU_SD ** -2.0
        self.mu = float(np.sum(kappa - omega * offset) / mu_precision + rng.standard_normal() / np.sqrt(mu_precision))
        # Spreads, of the templates that read the rows.
        logistic = self.own[self.kind == 0]
        self.variances[0] = draw_variance(rng, logistic[:, 0])
        if d.width > 1:
            self.variances[1:] = draw_variance(rng, logistic[:, 1:])
        self.row_variance = draw_variance(rng, self.beta)
        if self.agree.any():
            self._kinds(rng)

    def _kinds(self, rng: np.random.Generator) -> None:
        """Each template's kind given its effects (`budget_draws.draw_kinds`), by the logistic
        model's likelihood of its cells at them."""
        d = self.design
        eta = self.mu + self.template_part() - self.beta[d.row]
        log_likelihood = np.bincount(d.template, d.trials * (d.cells.value * eta - np.logaddexp(0.0, eta)),
                                     d.cells.templates)
        self.kind, self.independent_share, self.pattern_weights = draw_kinds(
            log_likelihood, self.agree, self.independent_share, self.pattern_weights, rng)

    def values(self, row_class: np.ndarray, binary: bool, rng: np.random.Generator) -> np.ndarray:
        """(templates x rows): every cell's drawn value, for rows of these classes: a row-independent
        template's pattern, else an outcome at the logistic model's probability (see the module
        docstring)."""
        probability = expit(self.logits(row_class))
        drawn = (rng.random(probability.shape) < probability) * 1.0 if binary else probability
        independent = self.kind > 0
        if independent.any():
            by_class = self.patterns[self.kind[independent] - 1]
            drawn[independent] = by_class[:, np.maximum(row_class, 0)]  # one column without classes
        return drawn

    def logits(self, row_class: np.ndarray) -> np.ndarray:
        """(templates x rows): every cell's linear predictor, for rows of these classes."""
        eta = self.mu + self.own[:, :1] - self.beta[None, :]
        if self.design.width > 1:
            effects = self.own[:, 1:] @ self.design.contrast.T
            eta = eta + np.where(row_class >= 0, effects[:, np.maximum(row_class, 0)], 0.0)
        return eta


def score_draws(matrix: CellMatrix, draws: int, rng: np.random.Generator, burn_in: int = BURN_IN) -> np.ndarray:
    """(draws x templates): posterior draws of each template's full-run score, its mean over every
    row with the computed cells as observed (see the module docstring)."""
    cells = matrix.cells()
    binary = cells.binary()
    chain = _Chain(_Design(cells), binary)
    weight = np.where(matrix.computed, matrix.counts, matrix.row_weights()[None, :])
    shares = cells.class_shares()
    out = np.empty((draws, len(matrix.templates)))
    for sweep in range(burn_in + draws):
        chain.sweep(rng)
        if sweep < burn_in:
            continue
        drawn = chain.values(draw_classes(cells.row_class, shares, rng), binary, rng)
        values = np.where(matrix.computed, matrix.sums, weight * drawn)
        out[sweep - burn_in] = values.sum(axis=1) / weight.sum(axis=1)
    return out
