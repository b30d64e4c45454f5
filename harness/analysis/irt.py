"""The item-response model a budgeted run's missing cells are predicted from.

PromptEval (Polo et al. 2024) estimates how a model's score spreads over many prompt templates from
a few (template, row) cells by borrowing strength: a row that is hard is hard in every wording, and
a wording that helps helps on every row. Its baseline is a logistic (Rasch) model,

    P(y_tr = 1) = sigmoid(mu + theta_t - beta_r),

one effect theta_t per template and one difficulty beta_r per row, and its covariate variant writes
theta_t = x_t . gamma + delta_t with x_t the template's tags (one-hot), so templates that share a
format choice share its effect and only what the tags do not explain is left to delta_t.

On a choice task a row's gold option (its class) is known from any computed cell of the row, and
this model adds a template x class term, eta_tr += alpha_{t, class(r)}, summing to zero over the
classes of each template (so it cannot stand in for the template's own effect, which stays in
delta_t: with a free alpha the class prior, set by the templates that always answer one option,
also set how far every template's main effect was shrunk, which came out barely at all, and the
best few templates of the tiny base model, 20 cells each, overshot by 8 points). Small models often answer
one option whatever the row in some wordings (a third of the tiny base model's format variants score
exactly 50% on a balanced binary task): the additive model can only predict such a template as
"right half the time on every row", which puts its hard-row and easy-row errors in the wrong
places and, fitted on a dozen cells, lets row difficulty pull it away from 50%; with alpha it is
right on the rows of the class it always picks and wrong on the others, which is what happens.
Rows of unknown class (none computed, or a generation task) get no alpha term. The K class
effects of a template are written in K - 1 orthonormal contrasts (`contrasts`), each with the
class prior's spread, so alpha_t is a Gaussian on the classes' sum-to-zero plane.

The fit is penalized maximum likelihood: Gaussian (L2) priors on delta, alpha, beta and gamma make the
parameters identifiable (a row seen only right answers would otherwise get difficulty -inf) and
shrink effects measured on few cells. A score in [0, 1] that is not binary (F1, ROUGE) enters the
same likelihood as a quasi-binomial observation, and a cell holding several judgements (IFEval)
counts as that many. The spreads of all four priors are set from the data (`fit_with_priors`:
empirical Bayes, a Laplace-approximate EM step per round), starting from light ones.

L-BFGS-B with the analytic gradient, on parameters scaled by their curvature, fits 48 templates x
433 rows at a tenth of the cells in milliseconds; a bootstrap refit starts from the full fit and
stops at a looser tolerance, so 200 resamples take about a second of CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

_SD_RANGE = (0.05, 5.0)  # logits: the prior spreads empirical Bayes may choose between
_EM_ROUNDS = 6
_COVARIATE_PSEUDO = 1.0  # tag effects of 1 logit the covariate spread's estimate counts in (see fit_with_priors)
# Stopping rules: a relative change of the objective, and a gradient, far below what moves a
# predicted probability by 1e-4, yet not so tight that the last iterations only chase float noise.
# A bootstrap refit stops earlier: it only has to place a percentile of hundreds of draws.
_FTOL, _GTOL = 1e-10, 1e-6
_REFIT_FTOL, _REFIT_GTOL = 1e-8, 1e-4
_NEWTON_STEPS, _NEWTON_LIMIT = 12, 1.0  # a template's own fit: damped Newton steps, at most 1 logit each


@dataclass(frozen=True)
class Cells:
    """The computed cells of one (task, shots): parallel arrays, one entry per cell.

    `template` and `row` index the template and row lists of the matrix; `value` is the cell's mean
    judgement in [0, 1], `weight` its number of judgements. `row_class` is each row's class in
    0..classes-1 (its gold option, numbered over the classes present), -1 where unknown; `classes`
    is 0 where there is no class term (a generation task, or every known row of one class)."""

    template: np.ndarray
    row: np.ndarray
    value: np.ndarray
    weight: np.ndarray
    templates: int
    rows: int
    row_class: np.ndarray
    classes: int

    def contrast(self) -> np.ndarray:
        return contrasts(self.classes)

    def binary(self) -> bool:
        """Whether every cell is one 0/1 judgement, so an uncomputed cell's outcome is a coin."""
        return bool(np.all(self.weight == 1) and np.all((self.value == 0) | (self.value == 1)))

    def class_shares(self) -> np.ndarray:
        """Each class's share of the rows of known class (empty without a class term)."""
        known = self.row_class[self.row_class >= 0]
        return np.bincount(known, minlength=self.classes)[:self.classes] / max(len(known), 1)

    def class_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The cells whose row has a class, and each one's (template, class) entry of the class
        effects (templates x classes), flattened."""
        known = np.nonzero(self.row_class[self.row] >= 0)[0]
        return known, self.template[known] * self.classes + self.row_class[self.row[known]]


def contrasts(classes: int) -> np.ndarray:
    """(classes x classes - 1): an orthonormal basis of the vectors over the classes that sum to zero
    (normalized Helmert contrasts), which class effects are written in; (0 x 0) for no class term."""
    basis = np.zeros((classes, max(classes - 1, 0)))
    for j in range(classes - 1):
        basis[:j + 1, j] = 1.0
        basis[j + 1, j] = -(j + 1.0)
        basis[:, j] /= np.sqrt((j + 1.0) * (j + 2.0))
    return basis


@dataclass(frozen=True)
class Priors:
    """Standard deviations (logits) of the Gaussian priors on template effects delta, template x
    class contrasts (alpha's coordinates), row difficulties beta and covariate effects gamma."""

    template_sd: float = 1.0
    row_sd: float = 1.5
    covariate_sd: float = 1.0
    class_sd: float = 1.0


@dataclass(frozen=True)
class Fit:
    """A fitted model: the intercept, covariate effects (one per feature column), template effects
    beyond the covariates, template x class contrasts (templates x classes - 1, in `contrast`'s
    basis), row difficulties, and the rows' classes the alpha term is indexed by (-1: none)."""

    mu: float
    gamma: np.ndarray
    delta: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    row_class: np.ndarray
    contrast: np.ndarray

    def vector(self) -> np.ndarray:
        return np.concatenate([[self.mu], self.gamma, self.delta, self.alpha.ravel(), self.beta])

    def class_effects(self) -> np.ndarray:
        """(templates x classes): alpha, each template's effect on each class, summing to zero."""
        return self.alpha @ self.contrast.T

    def theta(self, features: np.ndarray) -> np.ndarray:
        """Each template's total effect, x_t . gamma + delta_t."""
        return features @ self.gamma + self.delta

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(templates x rows): the linear predictor of every cell, computed or not."""
        eta = self.mu + self.theta(features)[:, None] - self.beta[None, :]
        if self.alpha.shape[1]:
            eta = eta + np.where(self.row_class >= 0, self.class_effects()[:, np.maximum(self.row_class, 0)], 0.0)
        return eta

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(templates x rows): the predicted probability of every cell, computed or not."""
        return expit(self.logits(features))


def _unpack(vector: np.ndarray, covariates: int, cells: Cells, contrast: np.ndarray) -> Fit:
    bounds = np.cumsum([1, covariates, cells.templates, cells.templates * contrast.shape[1]])
    return Fit(float(vector[0]), vector[1:bounds[1]], vector[bounds[1]:bounds[2]],
               vector[bounds[2]:bounds[3]].reshape(cells.templates, contrast.shape[1]), vector[bounds[3]:],
               cells.row_class, contrast)


def fit(cells: Cells, features: np.ndarray, priors: Priors, row_weights: np.ndarray | None = None,
        start: Fit | None = None, refit: bool = False) -> Fit:
    """The penalized maximum-likelihood fit. `row_weights` multiply each row's cells (a bootstrap
    draw's counts of each row); `start` is a warm start, a bootstrap refit's full-data fit; `refit`
    stops at the looser tolerance a bootstrap draw needs."""
    covariates, templates = features.shape[1], cells.templates
    contrast = cells.contrast()
    squared = contrast ** 2
    weight = cells.weight if row_weights is None else cells.weight * row_weights[cells.row]
    penalty = np.concatenate([[0.0], np.full(covariates, priors.covariate_sd ** -2.0),
                              np.full(templates, priors.template_sd ** -2.0),
                              np.full(templates * contrast.shape[1], priors.class_sd ** -2.0),
                              np.full(cells.rows, priors.row_sd ** -2.0)])
    t, r, y = cells.template, cells.row, cells.value
    known, pair = cells.class_index()
    # L-BFGS-B works on the parameters divided by the square root of their curvature at p = 1/2 (a
    # diagonal preconditioner): the intercept sees every cell and a row a handful, and unscaled that
    # gap in curvature costs several times the iterations.
    by_template_weight = np.bincount(t, weight, templates) / 4
    scale = 1.0 / np.sqrt(penalty + np.concatenate([
        [weight.sum() / 4], features.T @ by_template_weight, by_template_weight,
        (_by_class(pair, weight[known], cells) @ squared).ravel() / 4, np.bincount(r, weight, cells.rows) / 4]))

    def objective(scaled: np.ndarray) -> tuple[float, np.ndarray]:
        vector = scaled * scale
        params = _unpack(vector, covariates, cells, contrast)
        theta = features @ params.gamma + params.delta
        eta = params.mu + theta[t] - params.beta[r]
        eta[known] += params.class_effects().ravel()[pair]
        # softplus(eta) - y * eta, the negative log-likelihood of a (quasi-)binomial observation, and
        # its derivative sigmoid(eta) - y, both from one exp(-|eta|) (which cannot overflow).
        small = np.exp(-np.abs(eta))
        loss = weight @ (np.maximum(eta, 0.0) + np.log1p(small) - y * eta) + 0.5 * vector @ (penalty * vector)
        residual = weight * (np.where(eta >= 0, 1.0, small) / (1.0 + small) - y)
        by_template = np.bincount(t, residual, templates)
        gradient = np.concatenate([[residual.sum()], features.T @ by_template, by_template,
                                   (_by_class(pair, residual[known], cells) @ contrast).ravel(),
                                   -np.bincount(r, residual, cells.rows)])
        return float(loss), (gradient + penalty * vector) * scale

    initial = start.vector() if start is not None else _initial(cells, covariates)
    result = minimize(objective, initial / scale, jac=True, method="L-BFGS-B",
                      options={"maxiter": 2000, "ftol": _REFIT_FTOL if refit else _FTOL,
                               "gtol": _REFIT_GTOL if refit else _GTOL})
    return _unpack(result.x * scale, covariates, cells, contrast)


def _by_class(pair: np.ndarray, values: np.ndarray, cells: Cells) -> np.ndarray:
    """(templates x classes): `values` of the cells of known class summed by template and class."""
    return np.bincount(pair, values, cells.templates * cells.classes).reshape(cells.templates, cells.classes)


def _initial(cells: Cells, covariates: int) -> np.ndarray:
    """Zero effects around the logit of the overall mean: a start close to the answer for any data."""
    mean = float(np.clip(cells.weight @ cells.value / cells.weight.sum(), 0.02, 0.98))
    return np.concatenate([[np.log(mean / (1 - mean))],
                           np.zeros(covariates + cells.templates * max(cells.classes, 1) + cells.rows)])


def cell_information(cells: Cells, features: np.ndarray, fitted: Fit) -> np.ndarray:
    """Each computed cell's Fisher information about its linear predictor, weight * p * (1 - p)."""
    eta = fitted.logits(features)[cells.template, cells.row]
    return cells.weight * expit(eta) * expit(-eta)


def _posterior_sd_update(effects: np.ndarray, curvature: np.ndarray, sd: float, pseudo: float = 0.0) -> float:
    """One EM step for a prior's spread: the mean of each effect's squared mode plus its approximate
    posterior variance (the inverse of the likelihood's curvature plus the prior's), with `pseudo`
    effects of the default spread, 1 logit, added in (a prior on the spread itself)."""
    variance = (np.sum(effects ** 2 + 1.0 / (curvature + sd ** -2.0)) + pseudo) / (len(effects) + pseudo)
    return float(np.clip(np.sqrt(variance), *_SD_RANGE))


def fit_with_priors(cells: Cells, features: np.ndarray, priors: Priors = Priors()) -> tuple[Fit, Priors]:
    """The fit with the prior spreads chosen from the data by empirical Bayes.

    Each round fits the model, then sets each spread to what the effects and their Laplace-
    approximate posterior variances (from the diagonal of the Hessian) say; a few rounds settle it
    to the precision that matters here. How much rows differ decides how far an unseen cell can be
    predicted, and how much templates differ how far a template's few cells are pulled to the
    others': both vary from task to task (on the built-in tiny models' format variants the templates
    differ by a third of a logit, on a synthetic check by more than one), and a fixed spread
    over-disperses the estimated scores where templates differ little, pushing the tail quantiles
    out. The class spread likewise: large where many templates answer one option whatever the row,
    near zero where the model reads the rows (alpha then shrinks away and the additive model is
    left). The covariate spread too: a format variant's tags make some 30 one-hot columns for 48
    templates, and at a fixed spread of one logit they fitted each template nearly on its own (the
    tiny base model's best templates came out 15 points above their full-run scores, from 20 cells
    each). But where a few columns hold one real effect among null ones, a spread estimated from
    them alone shrank that effect (the report test's planted 1.2 logits read as 7 points, under the
    10 it is checked for), so the estimate counts `_COVARIATE_PSEUDO` effect of one logit besides
    the columns: among thirty columns it moves little, among six it keeps the one real effect from
    being shrunk away (four such pseudo-effects put COPA's 95% quantile 5 points high). The
    Laplace step understates spreads of binary data a little, which shrinks the tails a little."""
    current = fit(cells, features, priors)
    known, pair = cells.class_index()
    squared = cells.contrast() ** 2
    for _ in range(_EM_ROUNDS):
        information = cell_information(cells, features, current)
        by_template = np.bincount(cells.template, information, cells.templates)
        priors = replace(
            priors,
            template_sd=_posterior_sd_update(current.delta, by_template, priors.template_sd),
            row_sd=_posterior_sd_update(current.beta, np.bincount(cells.row, information, cells.rows), priors.row_sd),
            covariate_sd=(_posterior_sd_update(current.gamma, features.T @ by_template, priors.covariate_sd,
                                               _COVARIATE_PSEUDO)
                          if features.shape[1] else priors.covariate_sd),
            class_sd=(_posterior_sd_update(current.alpha.ravel(),
                                           (_by_class(pair, information[known], cells) @ squared).ravel(),
                                           priors.class_sd) if cells.classes else priors.class_sd),
        )
        current = fit(cells, features, priors, start=current)
    return current, priors


def template_design(cells: Cells) -> np.ndarray:
    """(cells x classes, or x 1 without a class term): each computed cell's derivative of its logit
    in its template's own effects, delta_t (1) and alpha_t's contrasts (its class's row of the
    basis; 0 on a row of unknown class)."""
    contrast = cells.contrast()
    design = np.zeros((len(cells.value), 1 + contrast.shape[1]))
    design[:, 0] = 1.0
    known, _ = cells.class_index()
    design[known, 1:] = contrast[cells.row_class[cells.row[known]]]
    return design


def template_hessian(cells: Cells, information: np.ndarray, priors: Priors) -> np.ndarray:
    """(templates x width x width): each template's block of the penalized Hessian in its own
    effects (see `template_design`), from each cell's Fisher `information`."""
    design = template_design(cells)
    width = design.shape[1]
    hessian = np.empty((cells.templates, width, width))
    for i in range(width):
        for j in range(i, width):
            hessian[:, i, j] = hessian[:, j, i] = np.bincount(cells.template, information * design[:, i] * design[:, j],
                                                              cells.templates)
    prior = np.array([priors.template_sd] + [priors.class_sd] * (width - 1)) ** -2.0
    return hessian + np.eye(width) * prior


def template_modes(cells: Cells, features: np.ndarray, fitted: Fit, priors: Priors,
                   row_weights: np.ndarray | None = None) -> Fit:
    """`fitted` with each template's own effects (delta_t, alpha_t) refitted to its cells, all else
    held: the shared intercept, covariates and rows are fitted with some templates' cells weighed
    down (`harness.analysis.budget`: those likely to ignore the rows), but a template's own fit,
    the logistic side of its mixture, should read all of its cells. A few Newton steps per template,
    all templates at once; each step is capped so a template its cells separate walks, not jumps."""
    design = template_design(cells)
    weight = cells.weight if row_weights is None else cells.weight * row_weights[cells.row]
    own = np.concatenate([fitted.delta[:, None], fitted.alpha], axis=1)
    offset = fitted.logits(features)[cells.template, cells.row] - np.sum(own[cells.template] * design, axis=1)
    prior = np.array([priors.template_sd] + [priors.class_sd] * (own.shape[1] - 1)) ** -2.0
    for _ in range(_NEWTON_STEPS):
        eta = offset + np.sum(own[cells.template] * design, axis=1)
        probability = expit(eta)
        residual = weight * (probability - cells.value)
        gradient = np.stack([np.bincount(cells.template, residual * column, cells.templates)
                             for column in design.T], axis=1) + own * prior
        hessian = template_hessian(cells, weight * probability * (1 - probability), priors)
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        size = np.abs(step).max(axis=1, keepdims=True)
        own = own - step * np.minimum(1.0, _NEWTON_LIMIT / np.maximum(size, 1e-300))
        if size.max() < 1e-6:
            break
    return replace(fitted, delta=own[:, 0], alpha=own[:, 1:])
