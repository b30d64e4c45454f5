"""Built-in tasks name hub datasets that load today: the copies lm-eval's task files name.

Script-based hub datasets (`super_glue`, `ybisk/piqa`) no longer load with `datasets` >= 4; lm-eval
moved to maintained parquet copies (`aps/super_glue`, `baber/piqa`). This compares every built-in
task's hub path, config and evaluation split with the lm-eval task file of the same dataset, read
straight from the installed package (its `!function` tags ignored; no TaskManager, which indexes
every task and is slow), so either side drifting is noticed here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.tasks.registry import Registry

# our task -> lm-eval task file (under lm_eval/tasks/) for the same dataset
LM_EVAL_FILES = {
    "boolq": "super_glue/boolq/default.yaml",
    "cb": "super_glue/cb/default.yaml",
    "copa": "super_glue/copa/default.yaml",
    "rte": "super_glue/rte/default.yaml",
    "wic": "super_glue/wic/default.yaml",
    "wsc": "super_glue/wsc/default.yaml",
    "winogrande": "winogrande/default.yaml",
    "anli_r1": "anli/anli_r1.yaml",
    "anli_r2": "anli/anli_r2.yaml",
    "anli_r3": "anli/anli_r3.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "story_cloze": "storycloze/storycloze_2016.yaml",
    "ifeval": "ifeval/ifeval.yaml",
}
# Built-in hub tasks lm-eval has no task for: task -> why. (Every built-in hub dataset has one today.)
NO_COUNTERPART: dict[str, str] = {}
# Evaluation splits that differ on purpose: task -> (lm-eval's split, ours, why).
SPLITS_DIFFER = {
    f"anli_r{r}": (f"test_r{r}", f"dev_r{r}", "the held-out protocol scores ANLI's dev rounds, as T0 reports them")
    for r in (1, 2, 3)
}

_SPEC = importlib.util.find_spec("lm_eval")
LM_EVAL_TASKS = Path(_SPEC.origin).parent / "tasks" if _SPEC and _SPEC.origin else None
needs_lm_eval = pytest.mark.skipif(LM_EVAL_TASKS is None or not LM_EVAL_TASKS.is_dir(),
                                   reason="lm-eval is not installed; its task files are the reference")


class _TaskFileLoader(yaml.SafeLoader):
    """lm-eval's task files tag Python hooks with `!function module.name`; their values do not matter here."""


_TaskFileLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def lm_eval_config(relative: str) -> dict[str, Any]:
    """An lm-eval task file's settings, with the file it `include`s underneath (as lm-eval merges them)."""
    assert LM_EVAL_TASKS is not None
    path = LM_EVAL_TASKS / relative
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskFileLoader)
    if "include" in config:
        base = lm_eval_config(str(path.parent.relative_to(LM_EVAL_TASKS) / config.pop("include")))
        config = {**base, **config}
    return config


def lm_eval_split(config: dict[str, Any]) -> str:
    """The split lm-eval scores: its test split when it names one, else its validation split."""
    return config.get("test_split") or config["validation_split"]


@pytest.fixture(scope="module")
def hub_tasks():
    return {name: task for name, task in Registry().tasks.items() if task.data.hub_path}


def test_every_hub_task_is_compared_or_says_why_not(hub_tasks):
    assert set(LM_EVAL_FILES).isdisjoint(NO_COUNTERPART)
    assert set(hub_tasks) == set(LM_EVAL_FILES) | set(NO_COUNTERPART), \
        "add the task to LM_EVAL_FILES, or to NO_COUNTERPART with the reason lm-eval has none"
    assert all(reason.strip() for reason in NO_COUNTERPART.values())
    assert set(SPLITS_DIFFER) <= set(LM_EVAL_FILES)


@needs_lm_eval
@pytest.mark.parametrize("task_name", sorted(LM_EVAL_FILES))
def test_hub_path_config_and_split_match_lm_eval(hub_tasks, task_name):
    config = lm_eval_config(LM_EVAL_FILES[task_name])
    data = hub_tasks[task_name].data
    where = f"tasks/{task_name}.yaml vs lm_eval/tasks/{LM_EVAL_FILES[task_name]}"
    assert (data.hub_path, data.hub_name) == (config["dataset_path"], config.get("dataset_name")), where
    if task_name in SPLITS_DIFFER:
        theirs, ours, _why = SPLITS_DIFFER[task_name]
        assert (lm_eval_split(config), data.eval_split) == (theirs, ours), where
    else:
        assert data.eval_split == lm_eval_split(config), where


@needs_lm_eval
def test_the_reference_reader_follows_includes_and_ignores_function_tags():
    challenge = lm_eval_config("arc/arc_challenge.yaml")
    assert (challenge["dataset_path"], challenge["dataset_name"], challenge["test_split"]) == \
        ("allenai/ai2_arc", "ARC-Challenge", "test")
    wsc = lm_eval_config("super_glue/wsc/default.yaml")
    assert wsc["dataset_name"] == "wsc.fixed" and "doc_to_text" in wsc
