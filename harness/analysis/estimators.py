"""The budget estimator's names, in a module of their own so the command line can offer them
without importing numpy and scipy."""

ESTIMATORS = ("plug-in", "bayes", "choices")
"""How the template scores and their distribution are estimated: "plug-in" (the default), the
penalized fit with a row bootstrap (`harness.analysis.budget`'s `_Model`); "bayes", posterior draws of the full
run (`harness.analysis.budget_bayes`); "choices", posterior draws of a model of the option each
cell chose (`harness.analysis.budget_choices`), where the matrix holds them (a choice task scored by
acc or acc_norm), else "bayes"'s. All three are measured side by side in `bench/bench_budget.py
--estimator` (bench/RESULTS.md). Tag effects and the naive estimate are the plug-in's under all."""
