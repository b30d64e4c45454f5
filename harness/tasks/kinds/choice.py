"""`choice`: rank classification. Each option is scored as a continuation of the prompt; the answer
is the option with the highest log-likelihood (acc) or per-character log-likelihood (acc_norm)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from harness.engine.base import Backend, ChoiceRequest, ScoreResult
from harness.errors import HarnessError
from harness.metrics import choice_metrics, metric_names
from harness.tasks.fields import check_jinja, expect, parse_options
from harness.tasks.kinds import register_kind
from harness.tasks.kinds.base import Renderer, Source, TaskKind, row_where
from harness.tasks.schema import RenderedRow, Task, Template


@register_kind("choice")
class ChoiceKind(TaskKind):
    def parse_fields(self, path: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
        for required in ("options", "answer"):
            if required not in raw:
                raise HarnessError(f"{path}: choice tasks need field {required!r}")
        answer = expect(path, "answer", raw["answer"], str, "a Jinja expression string")
        check_jinja(path, "answer", answer, expression=True)
        return {"options": parse_options(path, "options", raw["options"]), "answer": answer}

    def allowed_metrics(self) -> tuple[str, ...]:
        return metric_names("choice")

    def sources(self, task: Task, template: Template) -> list[Source]:
        owner = template if template.options is not None else task
        options = owner.options
        texts = ["{{ " + options + " }}"] if isinstance(options, str) else list(options or ())
        assert task.answer is not None, "parse_fields guarantees an answer"
        return [*(Source(owner.path, "options", text) for text in texts),
                Source(task.path, "answer", "{{ " + task.answer + " }}")]

    def render(self, renderer: Renderer, task: Task, template: Template, row: Mapping[str, Any],
               row_id: str) -> RenderedRow:
        options = self._options(renderer, task, template, row, row_id)
        answer_index = self._answer_index(renderer, task, row, options, row_where(task.path, task, row_id))
        if "options" in row:
            raise HarnessError(f"{row_where(task.path, task, row_id)}: the row has a field named 'options', which "
                               "templates of choice tasks use for the answer options; rename the field in the "
                               "data (or map it to another name under 'layouts:' in the task file)")
        prompt = renderer.template(template.prompt).render({**row, "options": list(options)})
        return RenderedRow(prompt, options, answer_index, None)

    @staticmethod
    def _options(renderer: Renderer, task: Task, template: Template, row: Mapping[str, Any],
                 row_id: str) -> tuple[str, ...]:
        owner = template if template.options is not None else task
        spec = owner.options
        where = row_where(owner.path, task, row_id)
        try:
            if isinstance(spec, str):
                value = renderer.expression(spec)(**row)
                if isinstance(value, jinja2.Undefined) or not isinstance(value, (list, tuple)):
                    raise HarnessError(f"{where}: options expression {spec!r} must give a list, got {value!r}; "
                                       "fix 'options' (or map the rows under 'layouts:' in the task file)")
                options = tuple(str(v) for v in value)
            else:
                assert spec is not None, "registry guarantees options on choice tasks"
                options = tuple(renderer.template(o).render(**row) for o in spec)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: field 'options': {exc.message}; add the field to the rows (or map it "
                               f"under 'layouts:' in {task.path}), or fix 'options'") from None
        if template.options is not None and task.options is not None and not isinstance(task.options, str):
            if len(options) != len(task.options):
                raise HarnessError(f"{template.path}: field 'options' has {len(options)} entries, "
                                   f"the task has {len(task.options)}; give one verbaliser per option")
        if len(options) < 2:
            raise HarnessError(f"{where}: a choice row needs at least 2 options, got {list(options)}")
        return options

    @staticmethod
    def _answer_index(renderer: Renderer, task: Task, row: Mapping[str, Any], options: Sequence[str],
                      where: str) -> int:
        """The right option's index. Every failure names the task file's `answer` key: the expression, or
        the labels it reads (then mapped under `layouts:`), is where the fix belongs."""
        assert task.answer is not None, "registry guarantees an answer on choice tasks"
        fix = "fix 'answer' in the task file, or map the rows' labels under 'layouts:' there"
        try:
            value = renderer.expression(task.answer)(**row)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: field 'answer' ({task.answer!r}): {exc.message}; {fix}") from None
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise HarnessError(f"{where}: field 'answer' ({task.answer!r}) failed on this row "
                               f"({type(exc).__name__}: {exc}); {fix}") from None
        if isinstance(value, jinja2.Undefined):
            raise HarnessError(f"{where}: field 'answer' ({task.answer!r}): {value._undefined_message}; {fix}")
        if isinstance(value, bool):
            raise HarnessError(f"{where}: answer expression {task.answer!r} gave {value!r}, not an index; {fix}")
        if isinstance(value, int):
            if not 0 <= value < len(options):
                raise HarnessError(f"{where}: answer index {value} is outside the {len(options)} options "
                                   f"(field 'answer': {task.answer!r}); {fix}")
            return value
        if isinstance(value, str) and value in options:
            return options.index(value)
        raise HarnessError(
            f"{where}: answer {value!r} (field 'answer': {task.answer!r}) is neither an option index nor one of "
            f"the options {list(options)}; {fix}"
        )

    def request(self, task: Task, prompt: str, row: RenderedRow, continuation_prefix: str) -> ChoiceRequest:
        return ChoiceRequest(prompt, tuple(continuation_prefix + o for o in row.options or ()))

    def answers(self, backend: Backend, requests: Sequence[ChoiceRequest],
                done: Collection[int]) -> Iterator[list[tuple[int, tuple[ScoreResult, ...]]]]:
        return backend.score(requests, done)

    def score(self, task: Task, row: RenderedRow, answer: tuple[ScoreResult, ...], continuation_prefix: str,
              source: Mapping[str, Any]) -> dict[str, Any]:
        logprobs = [r.logprob for r in answer]
        assert row.options is not None and row.answer_index is not None
        metrics = choice_metrics(logprobs, row.options, row.answer_index)
        return {
            "options": list(row.options), "continuation_prefix": continuation_prefix,
            "answer_index": row.answer_index, "logprobs": logprobs,
            "is_greedy": [r.is_greedy for r in answer], "num_tokens": [r.num_tokens for r in answer],
            "metrics": {m: metrics[m] for m in task.metrics},
        }

    def stored_answer(self, fields: Mapping[str, Any]) -> tuple[Any, str | None]:
        parts = (fields.get("logprobs"), fields.get("is_greedy"), fields.get("num_tokens"))
        if any(part is None for part in parts) or len({len(part or ()) for part in parts}) != 1:
            return None, "lacks its answer (logprobs, is_greedy and num_tokens, one of each per option)"
        return tuple(ScoreResult(*values) for values in zip(*parts, strict=True)), None
