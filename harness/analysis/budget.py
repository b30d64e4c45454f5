"""How a model's score is spread over a task's templates, estimated from a budget of its cells.

A full run computes every (template, row) cell; with dozens of format variants that is most of the
cost. A budgeted run computes the cells of a balanced design (`harness.eval.budget_design`) and this
module estimates what the full run would have reported, after PromptEval (Polo et al. 2024):

- Each template's score is its mean over ALL rows of the observed value where the cell was
  computed and the model's predicted probability elsewhere (`harness.analysis.irt`: a logistic
  model of template effect minus row difficulty, with template tags as covariates). A computed cell
  is never replaced by a prediction, so at a budget of every cell the estimate is the full run's
  mean exactly, with no model term.
  A template may instead be row-independent (its answer set by the row's class alone: always
  option A, or always right); each template's chance of that is weighed against the logistic model
  (`harness.analysis.budget_draws.RowIndependent`) and its predictions mix the two.
- From those scores, the distribution over templates: mean, quantiles 5/25/50/75/95, and the best
  and worst template, of the estimated scores themselves. Averaging each statistic over
  posterior-predictive draws of the uncomputed cells instead (`harness.analysis.budget_draws`,
  which the intervals use) would be right for a model that is right, but measured worse: with
  each cell a coin of its predicted probability the draws spread the templates wider than the
  full runs do (SmolLM2-135M on COPA at a tenth of the cells: the 95% quantile 5 points high,
  against 1 for the estimated scores; the tiny base model's variants 3 against 2), and with the
  row-independent templates (below) the masses at 50% and 100% are in the estimates already.
- Each tag's effect on the score (say, listing the options), in probability averaged over rows and
  templates, from the covariate model: every template's tag set to the value against set to the
  reference value, all else kept.
- Intervals for all of them from a bootstrap over rows: a drawn row brings all its computed cells,
  and the model is refitted on each draw (from the full fit, so hundreds take seconds), which
  measures the uncertainty of the shared parameters (intercept, covariates, row difficulties).
  A template score's and the distribution's replicate is then the full run's value on the run's
  own rows with the uncomputed cells a predictive draw around that refit, so an interval holds
  the posterior's uncertainty about the template (which shrinkage hides from the bootstrap) and the
  cells' own 0/1 noise (a template right on all its computed cells can score exactly 100%), but
  not the noise of drawing other rows, which the full run does not have: weighing the replicate
  by the drawn rows put an always-option-A template of a balanced task anywhere from 45 to 55%,
  and the 5% quantile of the tiny base model's variants, 50.0 in the full run, under 49.5 in
  every interval. A tag effect, a statement about the wording rather than this run, keeps the
  drawn rows' weights, as does the naive estimate.
- The naive estimate beside it, each template's mean over its computed cells, to show what the
  model adds.

Scores are on the metric's scale (0 to 1), as in run records; a tag effect is a difference on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from harness.analysis.budget_bayes import score_draws as posterior_scores
from harness.analysis.budget_choices import score_draws as choice_scores
from harness.analysis.budget_draws import RowIndependent, TemplatePosterior, draw_classes, outcomes
from harness.analysis.budget_matrix import CellMatrix
from harness.analysis.estimators import ESTIMATORS
from harness.analysis.irt import Cells, Fit, Priors, fit, fit_with_priors, template_modes
from harness.analysis.scores import bootstrap_rng, check_bootstrap, clean, percentile_interval, row_weights
from harness.analysis.template_features import TagColumn, tag_design
from harness.errors import HarnessError

_CLASS_SDS = (0.5, 1.0, 2.0, 4.0)  # logits: the class spreads weighed against the Laplace-EM one (`_Model.fit`)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SUMMARY = ("mean", *(f"q{round(100 * q):02d}" for q in QUANTILES), "best", "worst")
"""The statistics of a score distribution over templates, in `score_summary`'s order."""


@dataclass(frozen=True)
class Estimate:
    """A number with its bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TemplateEstimate:
    """One template's score: `estimated` is False when every cell was computed (the score is then
    the observed mean); `naive` is the mean over its computed cells (None when it has none)."""

    template: str
    score: Estimate
    computed: int
    rows: int
    estimated: bool
    naive: float | None


@dataclass(frozen=True)
class Distribution:
    """The scores over templates: mean, the `QUANTILES` (in order), and the best and worst template."""

    mean: Estimate
    quantiles: tuple[tuple[float, Estimate], ...]
    best_template: str
    best: Estimate
    worst_template: str
    worst: Estimate


@dataclass(frozen=True)
class TagEffect:
    """How much the score moves when every template's `tag` is `level` instead of `reference`
    (a difference of scores, on the metric's scale), with the number of templates that have it."""

    tag: str
    level: str
    reference: str
    effect: Estimate
    templates: int


@dataclass(frozen=True)
class BudgetEstimate:
    """The estimate for one (task, shots) from its computed cells (`computed` of `cells`)."""

    task: str
    shots: int
    metric: str
    cells: int
    computed: int
    confidence: float
    resamples: int
    templates: tuple[TemplateEstimate, ...]
    distribution: Distribution
    naive: Distribution
    tag_effects: tuple[TagEffect, ...]


def score_summary(scores: np.ndarray) -> np.ndarray:
    """(..., SUMMARY): the statistics of `SUMMARY` over the last axis (templates) of `scores`;
    NaN scores (a naive template with no computed cell) are left out, and a bootstrap draw of a
    tiny budget whose every naive score is NaN gives NaN statistics, which its interval skips."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.concatenate([np.nanmean(scores, axis=-1)[..., None],
                               np.moveaxis(np.nanquantile(scores, QUANTILES, axis=-1), 0, -1),
                               np.nanmax(scores, axis=-1)[..., None], np.nanmin(scores, axis=-1)[..., None]],
                              axis=-1)


class _Model:
    """The quantities of one (task, shots) the bootstrap recomputes under each draw of rows."""

    def __init__(self, matrix: CellMatrix, covariates: bool) -> None:
        self.matrix = matrix
        self.cells: Cells = matrix.cells()
        if not len(self.cells.value):
            raise HarnessError(f"task {matrix.task!r} ({matrix.shots}-shot) has no computed cell to estimate from; "
                               "give a budget of at least one cell")
        tags = matrix.tags if covariates else tuple({} for _ in matrix.templates)
        self.features, self.columns = tag_design(tags)
        self.row_weight = matrix.row_weights()
        # Each cell's weight in its template's mean: its judgements where computed, its row's elsewhere.
        self.weight = np.where(matrix.computed, matrix.counts, self.row_weight[None, :])
        self.complete = bool(matrix.computed.all())
        self.needs_fit = not self.complete or bool(self.columns)
        self.binary = self.cells.binary()
        self.shared_cells = self.cells  # the cells the shared parameters are fitted to (see `fit`)
        self.posterior: TemplatePosterior | None = None
        self.mixture: RowIndependent | None = None

    def fit(self, rng: np.random.Generator) -> tuple[Fit | None, Priors]:
        """The fit the estimate predicts from, and its priors. With cells to predict: first the
        logistic model on every template, to weigh each template's chance of being row-independent
        (`RowIndependent`); then the shared parameters and the prior spreads refitted with each
        template's cells weighted by its chance of not being so, so the templates that ignore the
        rows do not set the spreads of those that read them; then each template's own effects
        refitted to all its cells under those priors (`template_modes`: the logistic side of its
        mixture reads every cell it has), and the chances weighed again against that fit's
        marginal likelihoods, whose priors are now those of the templates that read the rows (at
        the first fit's, which the row-independent templates widen, a template that always
        answers option A on its 15 cells kept a one-in-five chance of being a logistic one).
        The class spread is then the one, of the Laplace-EM estimate and `_CLASS_SDS`, under which
        the mixture gives the cells the highest marginal likelihood (importance-sampled, not
        Laplace): with a few binary cells a template spread over three classes, the EM step
        understates the spread (SmolLM2-135M on CB at a tenth of the cells: 0.85 logits against
        3.4 on the full run, the templates that mostly answer "neutral" predicted near-flat over
        the classes, the 25% quantile 9 points high; this choice, 0.5 to 2 there, cut that to 7)."""
        if not self.needs_fit:
            return None, Priors()
        fitted, priors = fit_with_priors(self.cells, self.features)
        if self.complete:
            return fitted, priors
        first = TemplatePosterior(self.cells, self.features, fitted, priors, rng)
        self.mixture = RowIndependent(self.cells, first.log_marginal, self.binary)
        self.shared_cells = replace(self.cells,
                                    weight=self.cells.weight * (1 - self.mixture.probability[self.cells.template]))
        shared, priors = fit_with_priors(self.shared_cells, self.features)
        if self.cells.classes:
            seed = int(rng.integers(2 ** 62))  # the same proposals for every spread, so noise does not choose
            candidates = [replace(priors, class_sd=sd) for sd in (priors.class_sd, *_CLASS_SDS)]
            priors = max(candidates, key=lambda option: self._mixture(shared, option, np.random.default_rng(seed))[2]
                         .log_likelihood)
        fitted, self.posterior, self.mixture = self._mixture(shared, priors, rng)
        return fitted, priors

    def _mixture(self, shared: Fit, priors: Priors,
                 rng: np.random.Generator) -> tuple[Fit, TemplatePosterior, RowIndependent]:
        """Each template's own effects fitted under `priors` about the shared fit, their posterior,
        and the mixture with the row-independent kind (whose `log_likelihood` weighs the priors)."""
        fitted = template_modes(self.cells, self.features, shared, priors)
        posterior = TemplatePosterior(self.cells, self.features, fitted, priors, rng)
        return fitted, posterior, RowIndependent(self.cells, posterior.log_marginal, self.binary)

    def refit(self, fitted: Fit | None, priors: Priors, draw: np.ndarray) -> Fit | None:
        """The fit under a bootstrap draw of rows, from the full fit, as `fit` made it."""
        if fitted is None:
            return None
        refit = fit(self.shared_cells, self.features, priors, row_weights=draw, start=fitted, refit=True)
        return refit if self.complete else template_modes(self.cells, self.features, refit, priors, draw)

    def scores(self, fitted: Fit | None) -> np.ndarray:
        """Per template: the mean over the rows of observed values and, where not computed, predictions."""
        values = self.matrix.sums
        if not self.complete:
            values = np.where(self.matrix.computed, values, self.weight * self.mixture.mixed(self.expected(fitted)))
        return values.sum(axis=1) / self.weight.sum(axis=1)

    def expected(self, fitted: Fit) -> np.ndarray:
        """(templates x rows): every cell's probability under the logistic model; on a row of unknown
        class, averaged over the classes by their shares."""
        probabilities = fitted.probabilities(self.features)
        unknown = fitted.row_class < 0
        if self.cells.classes and unknown.any():
            logits = fitted.logits(self.features)[:, unknown]
            effects = fitted.class_effects()
            probabilities[:, unknown] = sum(share * expit(logits + effects[:, k, None])
                                            for k, share in enumerate(self.cells.class_shares()))
        return probabilities

    def predictive(self, fitted: Fit | None, rng: np.random.Generator) -> np.ndarray:
        """Per template: the mean over the rows of observed values and, where not computed, outcomes
        drawn from a posterior draw of the template effects (`harness.analysis.budget_draws`) and,
        on a row of unknown class, of the row's class."""
        if self.complete:
            return self.scores(fitted)
        row_class = draw_classes(fitted.row_class, self.cells.class_shares(), rng)
        logits = replace(fitted, row_class=row_class).logits(self.features) + self.posterior.shift(row_class, rng)
        drawn = self.mixture.choose(outcomes(logits, self.binary, rng), row_class, rng)
        values = np.where(self.matrix.computed, self.matrix.sums, self.weight * drawn)
        return values.sum(axis=1) / self.weight.sum(axis=1)

    def naive(self, draw: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.matrix.sums @ draw) / (self.matrix.counts @ draw)

    def effects(self, fitted: Fit | None, draw: np.ndarray) -> np.ndarray:
        """Every non-reference level's effect, in `levels()` order. Setting a template's tag to a
        level only moves its logits by that level's covariate effect less its own level's, so the
        logits are computed once (this runs for every bootstrap draw)."""
        if fitted is None:
            return np.zeros(len(self.levels()))
        weights = self.row_weight * draw
        logits = fitted.logits(self.features)
        out = []
        for column in self.columns:
            block = slice(column.start, column.start + len(column.levels))
            own = self.features[:, block] @ fitted.gamma[block]
            means = {level: expit(logits + (fitted.gamma[column.start + i] - own)[:, None]) @ weights
                     for i, level in enumerate(column.levels)}
            out += [np.mean(means[level] - means[column.reference]) / weights.sum()
                    for level in column.levels if level != column.reference]
        return np.asarray(out)

    def levels(self) -> list[tuple[TagColumn, str]]:
        return [(column, level) for column in self.columns for level in column.levels if level != column.reference]


def _estimates(point: np.ndarray, replicates: np.ndarray, confidence: float) -> list[Estimate]:
    return [Estimate(clean(p), *percentile_interval(replicates[:, i], confidence)) for i, p in enumerate(point)]


def _distribution(templates: tuple[str, ...], scores: np.ndarray, point: np.ndarray, replicates: np.ndarray,
                  confidence: float) -> Distribution:
    """The distribution's statistics `point` (in `SUMMARY` order) with intervals from the replicates'
    scores; the best and worst templates are named from `scores`."""
    summary = _estimates(point, score_summary(replicates), confidence)
    known = [i for i in range(len(templates)) if not np.isnan(scores[i])]
    best = max(known, key=lambda i: (scores[i], templates[i]))
    worst = min(known, key=lambda i: (scores[i], templates[i]))
    return Distribution(summary[0], tuple(zip(QUANTILES, summary[1:-2], strict=True)), templates[best], summary[-2],
                        templates[worst], summary[-1])


POSTERIOR_DRAWS = 1000  # kept sweeps of the sampler: a 95% interval's ends rest on 25 draws each


def estimate_budget(matrix: CellMatrix, *, covariates: bool = True, seed: int = 0, resamples: int = 200,
                    confidence: float = 0.95, estimator: str = "plug-in") -> BudgetEstimate:
    """The full run's per-template scores, their distribution and the tags' effects, estimated from
    the computed cells of `matrix` (see the module docstring and `ESTIMATORS`). `covariates=False`
    fits the plain logistic model (no tags), PromptEval's baseline, for the plug-in's scores and
    the tag effects (of which there are then none)."""
    check_bootstrap(seed, resamples, confidence)
    if estimator not in ESTIMATORS:
        raise HarnessError(f"unknown budget estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
    # One BLAS thread: the fits are small, and L-BFGS-B's BLAS calls on many threads spin against
    # each other and any other load, which made a fit 25 times slower on a busy two-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _estimate(matrix, covariates, seed, resamples, confidence, estimator)


def option_model_applies(matrix: CellMatrix) -> bool:
    """Whether the option model applies: every computed cell holds its chosen option and one judgement,
    and its row's gold option is known."""
    if matrix.choices is None:
        return False
    _, rows = np.nonzero(matrix.computed)
    return bool(np.all(matrix.counts[matrix.computed] == 1) and np.all(matrix.row_classes[rows] >= 0))


def _estimate(matrix: CellMatrix, covariates: bool, seed: int, resamples: int, confidence: float,
              estimator: str) -> BudgetEstimate:
    model = _Model(matrix, covariates)
    rng = bootstrap_rng(seed, "budget-draws", matrix.task, matrix.shots)
    fitted, priors = model.fit(rng)
    ones = np.ones(len(matrix.rows))
    bayes = estimator != "plug-in" and not model.complete
    by_choice = bayes and estimator == "choices" and option_model_applies(matrix)
    if model.complete:
        # Summed as the record sums them, so a full run's estimate is its mean to the last bit.
        scores = matrix.sums.sum(axis=1) / matrix.counts.sum(axis=1)
    elif bayes:
        # Each template's posterior mean; under the logistic sampler each statistic of the
        # distribution its posterior median, the estimate with the least expected absolute error if
        # the model holds.
        sampler, label = (choice_scores, "budget-choices") if by_choice else (posterior_scores, "budget-bayes")
        score_draws = sampler(matrix, POSTERIOR_DRAWS, bootstrap_rng(seed, label, matrix.task, matrix.shots))
        scores = score_draws.mean(axis=0)
    else:
        scores = model.scores(fitted)
    # The option model's distribution is that of its template scores, as the plug-in's: the posterior
    # median of each statistic put the tail quantiles further out on SmolLM2's formats (COPA's q95 at
    # a tenth of the cells 4.6 points off against 1.2, RTE's 2.6 against 2.3; bench/RESULTS.md,
    # "The option model").
    by_draws = bayes and not by_choice
    summary = np.median(score_summary(score_draws), axis=0) if by_draws else score_summary(scores)
    naive, effects = model.naive(ones), model.effects(fitted, ones)
    draws = np.concatenate(list(row_weights(bootstrap_rng(seed, "budget", matrix.task, matrix.shots),
                                            len(matrix.rows), resamples)))
    if not bayes:
        score_draws = np.empty((resamples, len(matrix.templates)))
    naive_draws = np.empty((resamples, len(matrix.templates)))
    effect_draws = np.empty((resamples, len(effects)))
    for i, draw in enumerate(draws):
        refit = model.refit(fitted, priors, draw)
        naive_draws[i], effect_draws[i] = model.naive(draw), model.effects(refit, draw)
        if not bayes:
            score_draws[i] = model.predictive(refit, rng)
    computed = matrix.computed.sum(axis=1)
    per_template = tuple(
        TemplateEstimate(template, Estimate(clean(scores[t]), *percentile_interval(score_draws[:, t], confidence)),
                         int(computed[t]), len(matrix.rows), bool(computed[t] < len(matrix.rows)),
                         None if np.isnan(naive[t]) else clean(naive[t]))
        for t, template in enumerate(matrix.templates))
    tag_effects = tuple(
        TagEffect(column.tag, level, column.reference, estimate,
                  int(model.features[:, column.start + column.levels.index(level)].sum()))
        for (column, level), estimate in zip(model.levels(), _estimates(effects, effect_draws, confidence),
                                             strict=True))
    return BudgetEstimate(matrix.task, matrix.shots, matrix.metric, matrix.computed.size, int(computed.sum()),
                          confidence, resamples, per_template,
                          _distribution(matrix.templates, scores, summary, score_draws, confidence),
                          _distribution(matrix.templates, naive, score_summary(naive), naive_draws, confidence),
                          tag_effects)
