"""Held-out benchmarks and the built-in suite: rows and scoring, registered by name on import.

The registries of `harness.tasks.sources` and `harness.metrics` import this package (one of their
built-in plugins) the first time a name they do not hold is looked up. Importing it stays cheap:
the modules import their heavy dependencies (rouge-score, lm-eval, NLTK) inside the functions that
use them. The order below is the order their metrics are listed in (niv2 before ifeval).
"""

# isort: off
from harness.benchmarks import suite, niv2, ifeval
# isort: on

__all__ = ["ifeval", "niv2", "suite"]
