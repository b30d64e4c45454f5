"""Turn (task, template, row, exemplars) into the exact text a model sees.

Rendering happens in one sandboxed Jinja environment per `PromptRenderer`, created by the caller,
never a module-level mutable global. Undefined variables raise (StrictUndefined), so a template
that names a field the rows lack fails loudly instead of rendering an empty string.

The plain and chat layouts follow lm-eval's `fewshot_context`: plain prompts join exemplars as
`prompt + target_delimiter + answer + fewshot_delimiter`; chat prompts put each exemplar in its own
user/assistant turns (or collapse them into one user turn) and score options with no target
delimiter, because the chat template's assistant header already separates prompt and answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta

from harness.errors import HarnessError
from harness.tasks.jinja_env import make_environment, printed_fields
from harness.tasks.kinds import get_kind
from harness.tasks.schema import RenderedRow, Task, Template


@dataclass(frozen=True)
class Turn:
    """One prompt, with its answer text for an exemplar or None for the row being evaluated."""

    prompt: str
    answer: str | None = None


class PromptRenderer:
    """Renders rows with templates; compiled templates are cached per instance."""

    def __init__(self) -> None:
        self.env = make_environment()
        self._templates: dict[str, jinja2.Template] = {}
        self._expressions: dict[str, Any] = {}
        self._printed: dict[str, set[str]] = {}

    def template(self, source: str) -> jinja2.Template:
        if source not in self._templates:
            self._templates[source] = self.env.from_string(source)
        return self._templates[source]

    def expression(self, source: str) -> Any:
        if source not in self._expressions:
            self._expressions[source] = self.env.compile_expression(source, undefined_to_none=False)
        return self._expressions[source]

    def render_row(self, task: Task, template: Template, row: Mapping[str, Any], row_id: str) -> RenderedRow:
        where = f"{template.path}: row {row_id} of task {task.name!r}"
        if template.prompt not in self._printed:
            self._printed[template.prompt] = printed_fields(self.env, template.prompt)
        empty = sorted(name for name in self._printed[template.prompt] if name in row and row[name] is None)
        if empty:
            raise HarnessError(f"{where}: field {empty[0]!r} is missing or null in this row, and the template prints "
                               "it; fix the data (or guard the field with {% if %} in the template)")
        try:
            return get_kind(task.kind).render(self, task, template, row, where)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: {exc.message}; add the field to the rows or fix the template") from None
        except jinja2.TemplateError as exc:
            raise HarnessError(f"{where}: rendering failed ({exc}); fix the template") from None
        except RecursionError:
            raise HarnessError(f"{where}: rendering failed (recursion too deep: a macro or loop calls itself "
                               "without end); fix the template") from None

    def variables(self, task: Task, template: Template) -> set[str]:
        """Row fields a template (and the task's expressions) read, for checking against the columns."""
        sources = [template.prompt, *get_kind(task.kind).expressions(task, template)]
        names: set[str] = set()
        for source in sources:
            names |= meta.find_undeclared_variables(self.env.parse(source))
        return names - {"options"} - set(self.env.globals)

    def check_fields(self, task: Task, columns: Sequence[str], origin: str) -> None:
        """Fail before any model work if a template reads a field the rows do not have."""
        for template in task.templates:
            missing = sorted(self.variables(task, template) - set(columns))
            if missing:
                raise HarnessError(
                    f"{template.path}: uses field {missing[0]!r}, missing from the rows of {origin} "
                    f"(columns: {', '.join(columns)}); fix the template or the data"
                )


def plain_context(turns: Sequence[Turn], target_delimiter: str, fewshot_delimiter: str) -> str:
    """lm-eval's plain layout: exemplars then the query, no trailing delimiter after the query."""
    parts = [t.prompt + target_delimiter + t.answer + fewshot_delimiter for t in turns[:-1] if t.answer is not None]
    return "".join(parts) + turns[-1].prompt


def chat_messages(
    turns: Sequence[Turn], target_delimiter: str, fewshot_delimiter: str, multiturn: bool
) -> list[dict[str, str]]:
    """Chat messages for a k-shot prompt: one user/assistant pair per exemplar, or one user turn."""
    if not multiturn:
        return [{"role": "user", "content": plain_context(turns, target_delimiter, fewshot_delimiter)}]
    messages: list[dict[str, str]] = []
    for turn in turns[:-1]:
        assert turn.answer is not None, "every exemplar carries its answer"
        messages += [{"role": "user", "content": turn.prompt}, {"role": "assistant", "content": turn.answer}]
    messages.append({"role": "user", "content": turns[-1].prompt})
    return messages
