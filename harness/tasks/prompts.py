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
from harness.tasks.jinja_env import make_environment
from harness.tasks.schema import Task, Template


@dataclass(frozen=True)
class Turn:
    """One prompt, with its answer text for an exemplar or None for the row being evaluated."""

    prompt: str
    answer: str | None = None


@dataclass(frozen=True)
class RenderedRow:
    """A row worded by one template: what to show, what may be answered, and what is right."""

    prompt: str
    options: tuple[str, ...] | None
    answer_index: int | None
    references: tuple[str, ...] | None

    @property
    def answer_text(self) -> str:
        """The text a correct exemplar shows after its prompt."""
        if self.options is not None and self.answer_index is not None:
            return self.options[self.answer_index]
        assert self.references, "a generate row always has at least one reference"
        return self.references[0]


class PromptRenderer:
    """Renders rows with templates; compiled templates are cached per instance."""

    def __init__(self) -> None:
        self.env = make_environment()
        self._templates: dict[str, jinja2.Template] = {}
        self._expressions: dict[str, Any] = {}

    def _template(self, source: str) -> jinja2.Template:
        if source not in self._templates:
            self._templates[source] = self.env.from_string(source)
        return self._templates[source]

    def _expression(self, source: str) -> Any:
        if source not in self._expressions:
            self._expressions[source] = self.env.compile_expression(source, undefined_to_none=False)
        return self._expressions[source]

    def render_row(self, task: Task, template: Template, row: Mapping[str, Any], row_id: str) -> RenderedRow:
        where = f"{template.path}: row {row_id} of task {task.name!r}"
        try:
            if task.kind == "choice":
                options = self._options(task, template, row, where)
                answer_index = self._answer_index(task, row, options, where)
                if "options" in row:
                    raise HarnessError(f"{where}: the row has a field named 'options', which templates of choice "
                                       "tasks use for the answer options; rename the field in the data")
                prompt = self._template(template.prompt).render({**row, "options": list(options)})
                return RenderedRow(prompt, options, answer_index, None)
            references = self._references(task, template, row, where)
            prompt = self._template(template.prompt).render(**row)
            return RenderedRow(prompt, None, None, references)
        except jinja2.UndefinedError as exc:
            raise HarnessError(f"{where}: {exc.message}; add the field to the rows or fix the template") from None
        except jinja2.TemplateError as exc:
            raise HarnessError(f"{where}: rendering failed ({exc})") from None

    def _options(self, task: Task, template: Template, row: Mapping[str, Any], where: str) -> tuple[str, ...]:
        spec = template.options if template.options is not None else task.options
        if isinstance(spec, str):
            value = self._expression(spec)(**row)
            if isinstance(value, jinja2.Undefined) or not isinstance(value, (list, tuple)):
                raise HarnessError(f"{where}: options expression {spec!r} must give a list, got {value!r}")
            options = tuple(str(v) for v in value)
        else:
            assert spec is not None, "registry guarantees options on choice tasks"
            options = tuple(self._template(o).render(**row) for o in spec)
        if template.options is not None and task.options is not None and not isinstance(task.options, str):
            if len(options) != len(task.options):
                raise HarnessError(f"{template.path}: field 'options' has {len(options)} entries, "
                                   f"the task has {len(task.options)}; give one verbaliser per option")
        if len(options) < 2:
            raise HarnessError(f"{where}: a choice row needs at least 2 options, got {list(options)}")
        return options

    def _answer_index(self, task: Task, row: Mapping[str, Any], options: Sequence[str], where: str) -> int:
        assert task.answer is not None, "registry guarantees an answer on choice tasks"
        value = self._expression(task.answer)(**row)
        if isinstance(value, bool) or isinstance(value, jinja2.Undefined):
            raise HarnessError(f"{where}: answer expression {task.answer!r} gave {value!r}, not an index")
        if isinstance(value, int):
            if not 0 <= value < len(options):
                raise HarnessError(f"{where}: answer index {value} is outside the {len(options)} options")
            return value
        if isinstance(value, str) and value in options:
            return options.index(value)
        raise HarnessError(
            f"{where}: answer {value!r} is neither an option index nor one of the options {list(options)}"
        )

    def _references(self, task: Task, template: Template, row: Mapping[str, Any], where: str) -> tuple[str, ...]:
        expression = template.target or task.target
        assert expression is not None, "registry guarantees a target on generate tasks"
        value = self._expression(expression)(**row)
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise HarnessError(f"{where}: target {expression!r} must give a string or a list of strings, got {value!r}")

    def variables(self, task: Task, template: Template) -> set[str]:
        """Row fields a template (and the task's expressions) read, for checking against the columns."""
        sources = [template.prompt]
        options = template.options if template.options is not None else task.options
        if isinstance(options, str):
            sources.append("{{ " + options + " }}")
        elif options:
            sources.extend(options)
        for expression in (task.answer, template.target or task.target):
            if expression:
                sources.append("{{ " + expression + " }}")
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
