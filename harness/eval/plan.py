"""The plan of a run: every (task, template, shots, row) rendered into the exact prompt a model sees.

The plan is a pure function of the config, the task files, the rows and the chat format, so the
same command after a crash plans the same samples. Rendering needs a chat format, never a model:
the tuning mixture plans its training prompts with the same Planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.chat import ChatFormat
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.record import SampleId
from harness.tasks.prompts import PromptRenderer, Turn, chat_messages, plain_context
from harness.tasks.rows import FewshotSampler, Split, load_split
from harness.tasks.schema import RenderedRow, Task, Template


@dataclass(frozen=True)
class PlannedSample:
    key: str
    task: Task
    template: Template
    shots: int
    row_id: str
    prompt: str
    row: RenderedRow
    exemplar_ids: tuple[str, ...]
    source: dict[str, Any]


def sample_key(task: str, template: Template, shots: int, row_id: str) -> str:
    return SampleId(task, template.id, template.hash, shots, row_id).key


def select_templates(task: Task, spec: str) -> list[Template]:
    if spec == "all":
        return list(task.templates)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [t for t in task.templates if t.id in wanted]
    if not chosen:
        known = ", ".join(t.id for t in task.templates)
        raise HarnessError(f"--templates {spec!r} matches no template of task {task.name!r} (its templates: {known})")
    return chosen


class Planner:
    """Renders every sample of a run: zero/k-shot, plain or through the model's chat template."""

    def __init__(self, config: RunConfig, chat_format: ChatFormat) -> None:
        self.config = config
        self.chat_format = chat_format
        self.renderer = PromptRenderer()
        self.chat = chat_format.resolve(config.chat)

    def context(self, task: Task, template: Template, turns: list[Turn]) -> str:
        delimiter = template.target_delimiter if template.target_delimiter is not None else task.target_delimiter
        if not self.chat:
            return plain_context(turns, delimiter, task.fewshot_delimiter)
        messages = chat_messages(turns, delimiter, task.fewshot_delimiter, self.config.fewshot_multiturn)
        return self.chat_format.render(messages)

    def continuation_prefix(self, task: Task, template: Template) -> str:
        """The text between prompt and option: the target delimiter, or nothing under a chat template."""
        if self.chat:
            return ""
        return template.target_delimiter if template.target_delimiter is not None else task.target_delimiter

    def plan_task(self, task: Task, evaluation: Split, pool: Split | None) -> list[PlannedSample]:
        self.renderer.check_fields(task, evaluation.columns, evaluation.origin)
        if pool is not None:
            self.renderer.check_fields(task, pool.columns, pool.origin)
        sampler = (
            FewshotSampler(pool, self.config.seed, pool.name == evaluation.name, task.data.fewshot_sampler == "first_n")
            if pool is not None else None
        )
        planned = []
        for template in select_templates(task, self.config.templates):
            for shots in self.config.shots:
                for row_id, row in zip(evaluation.ids, evaluation.rows, strict=True):
                    exemplars = sampler.sample(row_id, shots) if sampler else []
                    turns = [
                        Turn(rendered.prompt, rendered.answer_text)
                        for rendered in (self.renderer.render_row(task, template, r, i) for i, r in exemplars)
                    ]
                    rendered = self.renderer.render_row(task, template, row, row_id)
                    turns.append(Turn(rendered.prompt))
                    planned.append(PlannedSample(
                        sample_key(task.name, template, shots, row_id), task, template, shots, row_id,
                        self.context(task, template, turns), rendered, tuple(i for i, _ in exemplars), row,
                    ))
        return planned


def load_task_splits(task: Task, config: RunConfig) -> tuple[Split, Split | None]:
    evaluation = load_split(task, task.data.eval_split, config.limit, config.data_overrides)
    if max(config.shots) == 0:
        return evaluation, None
    if not task.data.fewshot_split:
        raise HarnessError(f"{task.path}: --shots {max(config.shots)} needs 'data.fewshot_split' in the task file")
    # The pool is the whole few-shot split, even when --limit cuts the evaluated rows.
    return evaluation, load_split(task, task.data.fewshot_split, None, config.data_overrides)
