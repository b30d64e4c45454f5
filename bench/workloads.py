"""Benchmark workloads: real prompts of the built-in suite, rendered by the harness's own planner.

Each workload is a list of ChoiceRequest or GenerateRequest, the exact strings both engines get:
the harness scores them through `HFBackend`, lm-eval through `HFLM.loglikelihood` /
`HFLM.generate_until` as (context, continuation) pairs, so only the engines differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.chat import PLAIN
from harness.engine import ChoiceRequest, GenerateRequest
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.tasks.registry import Registry

CHOICE_TASKS = ("compare_length", "compare_numbers", "parity", "sentiment_lexicon", "topic_lexicon")
GENERATE_TASKS = ("add_numbers", "extract_person", "list_first", "uppercase_word")
FIXED_SHOT_ROWS = 4


@dataclass
class Workload:
    name: str
    description: str
    choice: list[ChoiceRequest]
    generate: list[GenerateRequest]

    def __len__(self) -> int:
        return len(self.choice) + len(self.generate)


def _plan(registry: Registry, task_name: str, shots: int, limit: int, first_n: bool = False) -> list[Any]:
    config = RunConfig(tasks=task_name, shots=(shots,), limit=limit, chat="off", templates="all")
    task = registry.get(task_name)
    if first_n:  # the same k exemplars for every row (MMLU's dev shots), as `data.fewshot_sampler: first_n`
        task = dataclasses.replace(task, data=dataclasses.replace(task.data, fewshot_sampler="first_n"))
    evaluation, pool = load_task_splits(task, config)
    planner = Planner(config, PLAIN)
    return [(planner, s) for s in planner.plan_task(task, evaluation, pool)]


def _choice_requests(registry: Registry, tasks: tuple[str, ...], shots: int, limit: int,
                     first_n: bool = False) -> list[ChoiceRequest]:
    requests = []
    for task_name in tasks:
        for planner, sample in _plan(registry, task_name, shots, limit, first_n):
            prefix = planner.continuation_prefix(sample.task, sample.template)
            requests.append(ChoiceRequest(sample.prompt, tuple(prefix + o for o in sample.row.options)))
    return requests


def _option_tokens(tokenizer: Any, request: ChoiceRequest) -> list[int]:
    """Continuation token counts as lm-eval splits them (context encoded whole, then cut)."""
    context = request.context.rstrip()
    moved = request.context[len(context):]
    counts = []
    for option in request.continuations:
        whole = tokenizer.encode(context + moved + option)
        counts.append(len(whole) - len(tokenizer.encode(context)))
    return counts


def build_workloads(tokenizer: Any, *, rows: int, generate_rows: int) -> list[Workload]:
    """The workloads for one model (its tokenizer decides which options are single-token)."""
    registry = Registry()
    five_shot = [r for r in _choice_requests(registry, CHOICE_TASKS, 5, rows)
                 if max(_option_tokens(tokenizer, r)) >= 2]
    # A shared preamble needs rows to share it: at least FIXED_SHOT_ROWS per template.
    five_fixed = [r for r in _choice_requests(registry, CHOICE_TASKS, 5, max(rows, FIXED_SHOT_ROWS), first_n=True)
                  if max(_option_tokens(tokenizer, r)) >= 2]
    # Few templates of the tiny model's vocabulary have single-token options: more rows for these.
    zero_shot = [r for r in _choice_requests(registry, CHOICE_TASKS, 0, rows * 6)
                 if max(_option_tokens(tokenizer, r)) == 1]
    generate = []
    for task_name in GENERATE_TASKS:
        for _, sample in _plan(registry, task_name, 2, generate_rows):
            generation = sample.task.generation
            generate.append(GenerateRequest(sample.prompt, generation.max_new_tokens, tuple(generation.stop)))
    return [
        Workload("mc-5shot-multitoken", "5-shot multiple choice, every template of 5 choice tasks, questions "
                 "with at least one multi-token option", five_shot, []),
        Workload("mc-5shot-fixed-multitoken", "5-shot multiple choice as above, with the same 5 exemplars for "
                 "every row of a template (`fewshot_sampler: first_n`, as MMLU's dev shots), at least "
                 f"{FIXED_SHOT_ROWS} rows per template", five_fixed, []),
        Workload("mc-0shot-singletoken", "0-shot multiple choice, every template of 5 choice tasks, questions "
                 "whose options are all single tokens", zero_shot, []),
        Workload("generate-2shot", "2-shot greedy generation, every template of 4 generation tasks "
                 "(stop at newline, 6-12 new tokens)", [], generate),
    ]
