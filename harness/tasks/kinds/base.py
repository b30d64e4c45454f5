"""The interface every task kind implements (see the package docstring)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.engine.base import Backend
from harness.tasks.schema import RenderedRow, Task, Template


class Renderer(Protocol):
    """What a kind needs of the prompt renderer: compiled templates and expressions (cached there)."""

    def template(self, source: str) -> Any: ...

    def expression(self, source: str) -> Any: ...


@dataclass(frozen=True)
class Source:
    """A Jinja source that reads row fields, and the file and key it is written under: a field the
    rows lack is then reported against the task file's `answer` or the template's `options`, the
    place a fix belongs, not against whichever file happened to be rendered."""

    path: Path
    key: str
    text: str


def row_where(path: Path, task: Task, row_id: str) -> str:
    """How an error about one row names its place: the file at fault, the row and the task."""
    return f"{path}: row {row_id} of task {task.name!r}"


class TaskKind:
    """One kind of task. Instances are stateless; `register_kind` names them."""

    name: str = ""

    def parse_fields(self, path: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The kind's own fields of a task file, checked, as keyword arguments of `Task`."""
        raise NotImplementedError

    def allowed_metrics(self) -> tuple[str, ...]:
        """The metric names a task of this kind may declare."""
        raise NotImplementedError

    def check_template(self, template: Template) -> None:
        """Refuse a template field this kind has no use for (one line naming the file)."""

    def sources(self, task: Task, template: Template) -> list[Source]:
        """The Jinja sources, besides the prompt, that read row fields (for checking columns), each
        with the file and key it comes from (the template's own, or the task file's)."""
        raise NotImplementedError

    def render(self, renderer: Renderer, task: Task, template: Template, row: Mapping[str, Any],
               row_id: str) -> RenderedRow:
        """The row worded by the template: the prompt, and what may be answered and what is right.
        Errors name the file whose key is at fault (`row_where`)."""
        raise NotImplementedError

    def request(self, task: Task, prompt: str, row: RenderedRow, continuation_prefix: str) -> Any:
        """The backend request for one planned sample."""
        raise NotImplementedError

    def answers(self, backend: Backend, requests: Sequence[Any], done: Collection[int]) -> Iterator[list[Any]]:
        """The backend's answers, batch by batch, as (request index, answer)."""
        raise NotImplementedError

    def score(self, task: Task, row: RenderedRow, answer: Any, continuation_prefix: str,
              source: Mapping[str, Any]) -> dict[str, Any]:
        """The sample's record fields for this answer, its `metrics` included."""
        raise NotImplementedError

    def stored_answer(self, fields: Mapping[str, Any]) -> tuple[Any, str | None]:
        """The backend's answer as a stored sample's fields keep it (what `score` was given), so a
        resumed sample can be rescored and checked; or (None, why it cannot be read back). The
        default, (None, None), means samples of this kind are reused without that check."""
        return None, None

    def generation_spec(self, task: Task) -> dict[str, Any] | None:
        """The generation settings the run spec records (None where the kind does not generate)."""
        return None
