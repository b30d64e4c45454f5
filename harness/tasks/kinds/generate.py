"""`generate`: greedy generation until a stop string or the token limit, scored against references."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from harness.engine.base import Backend, GenerateRequest
from harness.errors import HarnessError
from harness.metrics import generate_metrics, metric_names
from harness.tasks.fields import check_jinja, expect
from harness.tasks.kinds import register_kind
from harness.tasks.kinds.base import Renderer, Source, TaskKind, row_where
from harness.tasks.schema import RenderedRow, Task, Template


@register_kind("generate")
class GenerateKind(TaskKind):
    def parse_fields(self, path: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
        if "target" not in raw:
            raise HarnessError(f"{path}: generate tasks need field 'target'")
        target = expect(path, "target", raw["target"], str, "a Jinja expression string")
        check_jinja(path, "target", target, expression=True)
        return {"target": target}

    def allowed_metrics(self) -> tuple[str, ...]:
        return metric_names("generate")

    def check_template(self, template: Template) -> None:
        if template.options is not None:
            raise HarnessError(f"{template.path}: field 'options' is only for choice tasks")

    def sources(self, task: Task, template: Template) -> list[Source]:
        owner = template if template.target else task
        return [Source(owner.path, "target", "{{ " + owner.target + " }}")] if owner.target else []

    def render(self, renderer: Renderer, task: Task, template: Template, row: Mapping[str, Any],
               row_id: str) -> RenderedRow:
        references = self._references(renderer, task, template, row, row_id)
        return RenderedRow(renderer.template(template.prompt).render(**row), None, None, references)

    @staticmethod
    def _references(renderer: Renderer, task: Task, template: Template, row: Mapping[str, Any],
                    row_id: str) -> tuple[str, ...]:
        owner = template if template.target else task
        expression = owner.target
        assert expression is not None, "registry guarantees a target on generate tasks"
        where = row_where(owner.path, task, row_id)
        try:
            value = renderer.expression(expression)(**row)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: field 'target' ({expression!r}): {exc.message}; fix 'target', or map "
                               f"the field under 'layouts:' in {task.path}") from None
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise HarnessError(f"{where}: target {expression!r} must give a string or a list of strings, got {value!r}")

    def request(self, task: Task, prompt: str, row: RenderedRow, continuation_prefix: str) -> GenerateRequest:
        return GenerateRequest(prompt, task.generation.max_new_tokens, task.generation.stop)

    def answers(self, backend: Backend, requests: Sequence[GenerateRequest],
                done: Collection[int]) -> Iterator[list[tuple[int, str]]]:
        return backend.generate(requests, done)

    def score(self, task: Task, row: RenderedRow, answer: str, continuation_prefix: str,
              source: Mapping[str, Any]) -> dict[str, Any]:
        assert row.references is not None
        return {"response": answer, "references": list(row.references),
                "metrics": generate_metrics(answer, row.references, task.metrics, source)}

    def stored_answer(self, fields: Mapping[str, Any]) -> tuple[Any, str | None]:
        response = fields.get("response")
        return (response, None) if response is not None else (None, "lacks its answer (response)")

    def generation_spec(self, task: Task) -> dict[str, Any] | None:
        return asdict(task.generation)
