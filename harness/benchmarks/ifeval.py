"""IFEval scoring (Zhou et al., 2023) through lm-eval's own instruction checkers.

The 25 kinds of verifiable instruction ("answer in under 300 words", "no commas", "wrap the answer
in JSON", ...) are judged by lm-eval's `lm_eval.tasks.ifeval.utils.process_results`, the very code
lm-eval's `ifeval` task scores with, so a response gets the same strict and loose verdicts here as
there. Nothing is reimplemented: a checker written twice drifts, and IFEval numbers are compared
across papers to the decimal.

Two things make those checkers usable offline and reproducibly:
- lm-eval's `instructions_util` calls `nltk.download("punkt_tab")` at import when NLTK cannot find
  the Punkt sentence-splitter parameters. The project ships the English parameters in
  `harness/data_files/nltk_data` (see the README there for where they come from) and puts that
  folder first on `nltk.data.path` before lm-eval's module is imported, so nothing downloads.
- Verdicts must not be random, or a run record would not reproduce and a resumed run would score
  differently from an uninterrupted one. Two sources of chance are fixed: the language checks call
  `langdetect`, which samples unless seeded (lm-eval leaves it unseeded; the seed here is 0, as
  langdetect's documentation suggests), and a checker given an argument it rejects draws a
  replacement from Python's global `random` (in the 541 prompts, `keywords:letter_frequency` with
  letter '#' in row 1122 and '!' in row 1129 becomes a random ASCII letter; lm-eval's verdict on
  those two rows is a coin toss per run). Each scoring call runs under a fixed seed of the global
  `random` and restores its previous state afterwards, so the rest of the process is undisturbed.

Importing this module is cheap (the metric registry imports it to learn the name `ifeval`): NLTK,
langdetect and lm-eval are imported by the first scoring call.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.errors import HarnessError
from harness.metrics import MetricValues, register_metric

NLTK_DATA = Path(__file__).resolve().parent.parent / "data_files" / "nltk_data"
"""The folder holding `tokenizers/punkt_tab/english`, put first on NLTK's search path."""

LANGDETECT_SEED = 0
RANDOM_SEED = 0
"""The seed of Python's global `random` while lm-eval's checkers run (see the module docstring)."""

_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def use_bundled_nltk_data() -> None:
    """Put the shipped NLTK data first on NLTK's search path (idempotent).

    Must run before `lm_eval.tasks.ifeval.instructions_util` is first imported: that import looks
    for `tokenizers/punkt_tab` and downloads it when missing.
    """
    import nltk

    folder = str(NLTK_DATA)
    if folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        raise HarnessError(
            f"{NLTK_DATA}: NLTK's punkt_tab English data is missing from the installed harness; "
            "reinstall the project (the files are package data)"
        ) from None


@lru_cache(maxsize=1)
def lm_eval_ifeval() -> ModuleType:
    """lm-eval's `lm_eval.tasks.ifeval.utils`, imported offline and with langdetect seeded."""
    use_bundled_nltk_data()
    import langdetect

    langdetect.DetectorFactory.seed = LANGDETECT_SEED
    from lm_eval.tasks.ifeval import utils

    return utils


def _point_nltk_at_bundled_data() -> None:
    """Make the shipped data NLTK's first search path for whatever imports lm-eval's ifeval modules
    after this module (a test comparing against lm-eval, say), without importing NLTK (2 s) here.

    NLTK reads the NLTK_DATA environment variable when `nltk.data` is first imported; once it has
    been, its path list is edited directly.
    """
    if "nltk.data" in sys.modules:
        use_bundled_nltk_data()
        return
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if str(NLTK_DATA) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(NLTK_DATA), *paths])


_point_nltk_at_bundled_data()


@contextmanager
def fixed_random_draws() -> Iterator[None]:
    """Run the enclosed code under `random.seed(RANDOM_SEED)`, then restore the previous state.

    lm-eval's checkers draw from the global `random` when an instruction argument is missing or
    rejected; fixing the draws makes a verdict a function of (row, response) alone.
    """
    state = random.getstate()
    random.seed(RANDOM_SEED)
    try:
        yield
    finally:
        random.setstate(state)


def _check_row(row: Mapping[str, Any]) -> None:
    """Fail with one line naming the row and field when a row cannot be an IFEval row."""
    where = f"IFEval row key={row.get('key')!r}"
    for field in _FIELDS:
        if field not in row:
            raise HarnessError(f"{where}: missing field {field!r}; IFEval rows need {', '.join(_FIELDS)}")
    instructions, kwargs = row["instruction_id_list"], row["kwargs"]
    if not isinstance(instructions, (list, tuple)) or not all(isinstance(i, str) for i in instructions):
        raise HarnessError(f"{where}: field 'instruction_id_list' must be a list of instruction ids")
    if not isinstance(kwargs, (list, tuple)) or not all(isinstance(k, Mapping) for k in kwargs):
        raise HarnessError(f"{where}: field 'kwargs' must be a list of mappings, one per instruction")
    if len(kwargs) != len(instructions):
        raise HarnessError(f"{where}: field 'kwargs' has {len(kwargs)} entries for "
                           f"{len(instructions)} instructions; give one per instruction")
    registry = lm_eval_ifeval().instructions_registry.INSTRUCTION_DICT
    unknown = [i for i in instructions if i not in registry]
    if unknown:
        raise HarnessError(f"{where}: field 'instruction_id_list' names unknown instruction {unknown[0]!r}")


@register_metric("ifeval", headline="prompt_level_strict_acc")
def ifeval_metric(prediction: str, references: Sequence[str], row: Mapping[str, Any]) -> MetricValues:
    """Strict and loose IFEval verdicts for one response, as lm-eval's `ifeval` task gives them.

    `references` is ignored: IFEval has no reference answer, the row's instructions are the key.
    Prompt-level values are 0/1 (every instruction followed); instruction-level values are one 0/1
    per instruction, which the harness flattens when aggregating, as lm-eval's
    `agg_inst_level_acc` does. Rows loaded through `datasets` carry None for the keyword arguments
    other instructions use; lm-eval's checkers drop those themselves, so rows are passed as loaded.
    """
    _check_row(row)
    doc = {field: row[field] for field in _FIELDS}
    doc["kwargs"] = [dict(k) for k in row["kwargs"]]
    with fixed_random_draws():
        result = lm_eval_ifeval().process_results(doc, [prediction])
    return {
        "prompt_level_strict_acc": float(result["prompt_level_strict_acc"]),
        "inst_level_strict_acc": [float(v) for v in result["inst_level_strict_acc"]],
        "prompt_level_loose_acc": float(result["prompt_level_loose_acc"]),
        "inst_level_loose_acc": [float(v) for v in result["inst_level_loose_acc"]],
    }
