"""Turn (task, template, row, exemplars) into the exact text a model sees.

Rendering happens in one sandboxed Jinja environment per `PromptRenderer`, created by the caller,
never a module-level mutable global. Undefined variables raise (StrictUndefined), so a template
that names a field the rows lack fails loudly instead of rendering an empty string, and the error
names where the fix belongs (the rows and the task file's `layouts:`, or the key that misreads them).

The plain and chat layouts follow lm-eval's `fewshot_context`: plain prompts join exemplars as
`prompt + target_delimiter + answer + fewshot_delimiter`; chat prompts put each exemplar in its own
user/assistant turns (or collapse them into one user turn) and score options with no target
delimiter, because the chat template's assistant header already separates prompt and answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta

from harness.errors import HarnessError
from harness.tasks.jinja_env import make_environment, printed_fields
from harness.tasks.kinds import get_kind
from harness.tasks.kinds.base import Source
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
            raise HarnessError(
                f"{task.path}: row {row_id} of task {task.name!r}: field {empty[0]!r} is missing or null in this row, "
                f"and template {template.path.name} prints it; fix the rows (or map the field from their columns "
                "under 'layouts:' in the task file), or guard it with {% if %} in the template")
        try:
            return get_kind(task.kind).render(self, task, template, row, row_id)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: {exc.message}; add the field to the rows (or map it under 'layouts:' in "
                               f"{task.path}), or fix the template") from None
        except jinja2.TemplateError as exc:
            raise HarnessError(f"{where}: rendering failed ({exc}); fix the template") from None
        except RecursionError:
            raise HarnessError(f"{where}: rendering failed (recursion too deep: a macro or loop calls itself "
                               "without end); fix the template") from None

    def sources(self, task: Task, template: Template) -> list[Source]:
        """What reads row fields when a template renders a row: its prompt, and the kind's sources."""
        return [Source(template.path, "prompt", template.prompt), *get_kind(task.kind).sources(task, template)]

    def fields_read(self, source: str) -> set[str]:
        """Row fields one Jinja source reads (`options` is the renderer's own, not a row field)."""
        return meta.find_undeclared_variables(self.env.parse(source)) - {"options"} - set(self.env.globals)

    def check_fields(self, task: Task, columns: Sequence[str], origin: str) -> None:
        """Fail before any model work if a template or the task reads a field the rows do not have.

        The error names the key where the fix belongs: the task file's `answer`/`options`/`target` when
        they read it; for a template, the rows (map the field under the task file's `layouts:`) unless
        the name is close to one of the columns, which is most likely the template's typo.
        """
        present = set(columns)
        listed = ", ".join(columns)
        for template in task.templates:
            for source in self.sources(task, template):
                missing = sorted(self.fields_read(source.text) - present)
                if not missing:
                    continue
                name = missing[0]
                close = difflib.get_close_matches(name, list(columns), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                if source.path == task.path:
                    raise HarnessError(
                        f"{task.path}: field {source.key!r} reads {name!r}, missing from the rows of {origin} "
                        f"(columns: {listed}); {hint}fix {source.key!r} in the task file, or map {name!r} from "
                        "the rows' columns under 'layouts:' there")
                if close:  # most likely a typo in the template: the fix belongs there
                    raise HarnessError(f"{template.path}: uses field {name!r}, missing from the rows of {origin} "
                                       f"(columns: {listed}); {hint}fix the name in the template's {source.key!r}, "
                                       f"or map the field under 'layouts:' in {task.path}")
                raise HarnessError(f"{task.path}: template {template.path.name} uses field {name!r}, missing from the "
                                   f"rows of {origin} (columns: {listed}); the rows lack it: map it from their "
                                   "columns under 'layouts:' in this task file, or point the task at rows that have it")


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
