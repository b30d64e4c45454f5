"""The schema of tasks and templates, as frozen dataclasses.

A `Task` says where rows come from and how a row is scored; a `Template` says how a row is worded.
Both are plain data: parsing and validation live in `registry`, rendering in `prompts`. The same
objects serve evaluation and tuning, so a training example and an evaluation prompt can never be
rendered by two different code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError

TaskKind = Literal["choice", "generate"]

@dataclass(frozen=True)
class TemplateTags:
    """What kind of wording a template is, for slicing results (T0/FLAN template types)."""

    options: bool
    style: str
    turned_around: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """One wording of a task. `hash` changes whenever anything that affects rendering changes."""

    id: str
    path: Path
    prompt: str
    tags: TemplateTags
    hash: str
    options: tuple[str, ...] | str | None = None
    target: str | None = None
    target_delimiter: str | None = None


@dataclass(frozen=True)
class DataSource:
    """Where a task's rows come from: exactly one of generator, files, hub or loader.

    A run's --data-dir / --data options can point any task at a local folder instead (see `data`).
    """

    eval_split: str
    fewshot_split: str | None
    generator: str | None = None
    loader: str | None = None
    loader_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    hub_path: str | None = None
    hub_name: str | None = None
    id_field: str | None = None
    train_split: str | None = None
    fewshot_sampler: str = "random"
    """How k-shot exemplars are chosen: "random" (a seeded draw per row) or "first_n" (the first k rows
    of the few-shot split for every row, as MMLU's dev shots; lm-eval's `first_n` sampler)."""
    limit_by: str | None = None
    """A row field naming the member task of a task family (NIv2's `task_name`): `--limit N` then keeps
    the first N rows of each member, as the NIv2 paper evaluates the first 100 instances of each
    task, instead of the first N rows of the whole family."""

    @property
    def tuning_split(self) -> str | None:
        """The split a tuning mixture draws from: `train_split` when given, else the few-shot pool.

        A task can keep a small few-shot pool (its exemplars stay the same) and still offer tuning
        many more rows, as the built-in suite does."""
        return self.train_split or self.fewshot_split

    @property
    def origin(self) -> str:
        """A short human description, used in error messages."""
        if self.generator:
            return f"built-in generator {self.generator!r}"
        if self.files:
            return "local files " + ", ".join(f"{k}={v}" for k, v in sorted(self.files.items()))
        if self.loader:
            return f"{self.loader} loader"
        return f"hub dataset {self.hub_path!r}" + (f" ({self.hub_name})" if self.hub_name else "")


@dataclass(frozen=True)
class Layout:
    """One way a task's rows may be laid out (the hub's, an original release's), and how to map it.

    A split's rows take the first of the task's layouts whose `columns` they all have; each of its
    `fields` (field name -> Jinja expression over the raw row) then sets that field of every row, so
    templates and the task's own expressions see one layout whatever file the rows came from.
    """

    name: str
    columns: tuple[str, ...]
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy generation settings of a `generate` task."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)


@dataclass(frozen=True)
class Task:
    """A task file, parsed and validated."""

    name: str
    cluster: str
    description: str
    kind: TaskKind
    data: DataSource
    metrics: tuple[str, ...]
    templates: tuple[Template, ...]
    path: Path
    hash: str
    options: tuple[str, ...] | str | None = None
    answer: str | None = None
    target: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    report_by: tuple[str, ...] = ()
    related_clusters: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    layouts: tuple[Layout, ...] = ()

    def template(self, template_id: str) -> Template:
        for template in self.templates:
            if template.id == template_id:
                return template
        known = ", ".join(t.id for t in self.templates)
        raise HarnessError(f"task {self.name!r} has no template {template_id!r}; its templates: {known}")


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
