"""Test helper: run lm-eval 0.4.x's `hf` backend on rows and prompts the harness produced, offline.

The parity tests write the harness's rows (or its rendered prompts) as a local JSONL file with an
lm-eval task YAML next to it, evaluate with `simple_evaluate(log_samples=True)` and get lm-eval's
logged samples back in document order, to compare each with the harness sample of the same row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class Function(str):
    """A YAML value written as `!function <module>.<name>`, which lm-eval's loader imports."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))

# lm-eval imports `utils.py` next to the task YAML for `!function utils.RowExemplars`.
# The sampler hands lm-eval each row's own exemplars (the ones the harness drew for that row), in
# order, so lm-eval assembles the few-shot context itself from exactly the harness's exemplars.
# lm-eval passes the evaluated doc as `eval_doc` only when the few-shot split is the test split,
# which is why the tasks using it set `fewshot_config.split` to the test split.
UTILS_SOURCE = '''\
from lm_eval.api.samplers import ContextSampler


class RowExemplars(ContextSampler):
    def sample(self, n, eval_doc=None, df=None, **kwargs):
        assert eval_doc is not None, "fewshot_config.split must equal test_split"
        exemplars = list(eval_doc["exemplars"])
        assert len(exemplars) == n, (len(exemplars), n)
        return exemplars
'''

ACC_METRICS = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
]


def write_task(directory: Path, name: str, rows: Iterable[Mapping[str, Any]], config: Mapping[str, Any]) -> None:
    """Write `<name>.jsonl`, `<name>.yaml` and `utils.py` into `directory` (lm-eval's include path).

    The data source, split and an isolated `datasets` cache (so the user's ~/.cache is never
    touched) are added to the task-specific keys in `config`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(directory / "hf_datasets")},
        "test_split": "test",
        **config,
    }
    text = yaml.dump(task, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    (directory / "utils.py").write_text(UTILS_SOURCE, encoding="utf-8")


def with_exemplars(config: dict[str, Any], shots: int) -> dict[str, Any]:
    """Let lm-eval build a `shots`-shot context from each row's `exemplars` field."""
    if shots == 0:
        return {**config, "num_fewshot": 0}
    return {
        **config,
        "num_fewshot": shots,
        "fewshot_config": {"sampler": Function("utils.RowExemplars"), "split": "test"},
    }


def choice_config(target_delimiter: str, fewshot_delimiter: str = "\n\n") -> dict[str, Any]:
    """A multiple-choice task over rows {prompt, choices, label}.

    `{{prompt}}` renders the string unchanged in lm-eval's Jinja environment (keep_trailing_newline,
    no trim/lstrip of blocks, no autoescape), so no `!function` doc_to_text is needed; the tests
    also assert that the context lm-eval logged equals the harness's prompt character for
    character, so any alteration would fail loudly. (One lm-eval quirk to keep in mind: a rendered
    text made only of digits is turned into an int; no prompt here is.)
    """
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "target_delimiter": target_delimiter,
        "fewshot_delimiter": fewshot_delimiter,
        "metric_list": ACC_METRICS,
    }


def generate_config(stop: Sequence[str], max_new_tokens: int, target_delimiter: str = " ",
                    fewshot_delimiter: str = "\n\n") -> dict[str, Any]:
    """A greedy generate-until task over rows {prompt, reference}."""
    return {
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "reference",
        "target_delimiter": target_delimiter,
        "fewshot_delimiter": fewshot_delimiter,
        "generation_kwargs": {"until": list(stop), "max_gen_toks": max_new_tokens, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


def make_hflm(model_path: Path, batch_size: int) -> Any:
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model_path), device="cpu", dtype="float32", batch_size=batch_size)


def evaluate(
    lm: Any,
    directory: Path,
    names: Sequence[str],
    *,
    apply_chat_template: bool = False,
    fewshot_as_multiturn: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Run the named tasks of `directory` through lm-eval; each task's logged samples by doc id.

    `num_fewshot` is left to each task file (0 unless the file says otherwise).
    """
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model=lm,
        tasks=list(names),
        task_manager=TaskManager(include_path=str(directory), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=fewshot_as_multiturn,
    )
    assert results is not None, "lm-eval returned no results (not rank 0?)"
    return {name: sorted(results["samples"][name], key=lambda s: s["doc_id"]) for name in names}


def context(logged: Mapping[str, Any]) -> str:
    """The context string lm-eval scored or generated from (the same for every option)."""
    contexts = {arguments[0] for arguments in logged["arguments"]}
    assert len(contexts) == 1, contexts
    return contexts.pop()


def loglikelihoods(logged: Mapping[str, Any]) -> list[float]:
    return [float(resp[0][0]) for resp in logged["resps"]]


def greedy_flags(logged: Mapping[str, Any]) -> list[bool]:
    return [bool(resp[0][1]) for resp in logged["resps"]]


def continuations(logged: Mapping[str, Any]) -> list[str]:
    return [arguments[1] for arguments in logged["arguments"]]


def generation(logged: Mapping[str, Any]) -> str:
    return logged["resps"][0][0]
