"""FLAN-style instruction-tuning mixtures, rendered by the evaluation code itself.

A training example is made by `harness.eval.plan.Planner.plan_task` on a task's training split (its
`train_split`, else its `fewshot_split`), so prompt and chat layout are byte for byte what evaluation
shows for the same row, template and exemplars, and the completion is exactly what evaluation scores
after that prompt (`continuation_prefix + answer_text`). Mixing follows FLAN: every task contributes min(rows, cap)
examples (examples-proportional mixing), each with a seeded template and a seeded shot count; held
out clusters are excluded together with their related clusters (NLI with paraphrase), and
`held_out_templates` wordings of every trained task are kept back, so evaluation can measure a seen
task under instructions the model never saw.

Every draw is seeded per task, so adding a task never changes another task's examples.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, replace

from rich.markup import escape
from rich.table import Table

from harness.chat import PLAIN, ChatFormat
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner
from harness.seen import TaskRecord, TemplateRecord
from harness.tasks.registry import Registry
from harness.tasks.rows import DataOverrides, Split, load_split
from harness.tasks.schema import Task, Template


@dataclass(frozen=True)
class TrainingExample:
    """One prompt/completion pair, keyed like an evaluation sample so seen/held-out can be traced."""

    task: str
    cluster: str
    template_id: str
    template_hash: str
    shots: int
    options_shown: bool
    turned_around: bool
    row_id: str
    prompt: str
    completion: str


@dataclass(frozen=True)
class MixtureConfig:
    """Everything that changes a mixture's examples (the chat template aside)."""

    held_out_clusters: tuple[str, ...] = ()
    tasks: str = "builtin"
    examples_per_task_cap: int = 3000
    total_examples: int | None = None
    fewshot_fraction: float = 0.5
    max_shots: int = 3
    options_fraction: float | None = None
    include_turned_around: bool = False
    held_out_templates: int = 0
    chat: bool = False
    seed: int = 0
    fewshot_multiturn: bool = True
    data_dirs: tuple[str, ...] = ()
    data_folders: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for ok, field, value, need in (
            (self.examples_per_task_cap >= 1, "examples_per_task_cap", self.examples_per_task_cap, "at least 1"),
            (self.total_examples is None or self.total_examples >= 1, "total_examples", self.total_examples,
             "at least 1"),
            (0.0 <= self.fewshot_fraction <= 1.0, "fewshot_fraction", self.fewshot_fraction, "in [0, 1]"),
            (self.max_shots >= (self.fewshot_fraction > 0), "max_shots", self.max_shots, "at least 1 for few-shot"),
            (self.held_out_templates >= 0, "held_out_templates", self.held_out_templates, "at least 0"),
            (self.options_fraction is None or 0.0 <= self.options_fraction <= 1.0, "options_fraction",
             self.options_fraction, "in [0, 1]"),
        ):
            if not ok:
                raise HarnessError(f"mixture config: {field} must be {need}, got {value!r}")


@dataclass(frozen=True)
class Mixture:
    """The examples (shuffled, deterministic for a seed) and what a training manifest records of them.

    `tasks` are the manifest's own records, so what the manifest says was seen is what was built.
    """

    config: MixtureConfig
    chat: bool
    examples: tuple[TrainingExample, ...]
    tasks: tuple[TaskRecord, ...]
    held_out_requested: tuple[str, ...]
    held_out_clusters: tuple[str, ...]
    excluded: tuple[tuple[str, str, str], ...]  # (task, cluster, why it is not in the mixture)
    hash: str

    def task_counts(self) -> dict[str, int]:
        return {t.name: t.examples for t in self.tasks}

    def cluster_counts(self) -> dict[str, int]:
        clusters = dict.fromkeys(t.cluster for t in self.tasks)
        return {c: sum(t.examples for t in self.tasks if t.cluster == c) for c in clusters}


def expand_held_out(registry: Registry, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The requested clusters with every related one; an unknown name is an error, not a no-op."""
    known = {t.cluster for t in registry.tasks.values()} | {c for t in registry.tasks.values()
                                                            for c in t.related_clusters}
    for cluster in requested:
        if cluster not in known:
            raise HarnessError(f"unknown held-out cluster {cluster!r}; known clusters: {', '.join(sorted(known))}")
    return tuple(sorted(set().union(*(registry.related_clusters(c) for c in requested))))


def _why_not_trainable(task: Task, held_out: tuple[str, ...], templates: list[Template]) -> str | None:
    if task.cluster in held_out:
        return "held out"
    if not task.data.tuning_split:
        return "no training split (data.train_split or data.fewshot_split)"
    if task.data.tuning_split == task.data.eval_split:
        return f"its training split {task.data.tuning_split!r} is its evaluation split"
    if not templates:
        return "only turned-around templates (include_turned_around is off)"
    return None


def _without_held_out_templates(task: Task, templates: list[Template], config: MixtureConfig) -> list[Template]:
    """Drop `held_out_templates` of the task's templates, drawn by a seed of their own per task.

    Drawn from all of the task's templates (not only the trainable ones), so the held-out wordings do
    not change when turned-around templates are switched on or off; at least one template is kept.
    """
    if config.held_out_templates == 0:
        return templates
    if config.held_out_templates >= len(task.templates):
        raise HarnessError(f"held_out_templates={config.held_out_templates} leaves task {task.name!r} no template "
                           f"to train on (it has {len(task.templates)}); hold out fewer")
    ids = sorted(t.id for t in task.templates)
    held = set(random.Random(f"{config.seed}:{task.name}:held_out_templates").sample(ids, config.held_out_templates))
    return [t for t in templates if t.id not in held]


def allocate(sizes: dict[str, int], cap: int, total: int | None) -> dict[str, int]:
    """Examples-proportional mixing: min(rows, cap) per task, scaled to `total` by largest remainder."""
    capped = {name: min(size, cap) for name, size in sizes.items()}
    if total is None:
        return capped
    whole = sum(capped.values())
    exact = {name: total * count / whole for name, count in capped.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (counts[name] - exact[name], name))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def _draw_template(rng: random.Random, templates: list[Template], options_fraction: float | None) -> Template:
    shown = [t for t in templates if t.tags.options]
    hidden = [t for t in templates if not t.tags.options]
    if options_fraction is None or not shown or not hidden:
        return rng.choice(templates)
    return rng.choice(shown if rng.random() < options_fraction else hidden)


def _task_examples(task: Task, templates: list[Template], split: Split, count: int, config: MixtureConfig,
                   chat_format: ChatFormat) -> list[TrainingExample]:
    """`count` examples of one task, in draw order, rendered group by group by the Planner."""
    order = list(range(len(split)))
    random.Random(f"{config.seed}:{task.name}:rows").shuffle(order)
    template_rng = random.Random(f"{config.seed}:{task.name}:templates")
    shots_rng = random.Random(f"{config.seed}:{task.name}:shots")
    max_shots = min(config.max_shots, len(split) - 1)  # exemplars never include the row itself
    groups: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (template, shots) -> (position, row index)
    for position in range(count):
        template = _draw_template(template_rng, templates, config.options_fraction)
        fewshot = shots_rng.random() < config.fewshot_fraction and max_shots > 0
        shots = shots_rng.randint(1, max_shots) if fewshot else 0
        groups.setdefault((template.id, shots), []).append((position, order[position % len(order)]))
    examples: list[TrainingExample | None] = [None] * count
    for (template_id, shots), members in sorted(groups.items()):
        template = task.template(template_id)
        evaluation = replace(split, rows=tuple(split.rows[i] for _, i in members),
                             ids=tuple(split.ids[i] for _, i in members))
        planner = Planner(RunConfig(tasks=task.name, shots=(shots,), templates=template_id, seed=config.seed,
                                    chat="on" if config.chat else "off",
                                    fewshot_multiturn=config.fewshot_multiturn), chat_format)
        prefix = planner.continuation_prefix(task, template)
        for (position, _), sample in zip(members, planner.plan_task(task, evaluation, split if shots else None),
                                         strict=True):
            examples[position] = TrainingExample(
                task.name, task.cluster, template.id, template.hash, shots, template.tags.options,
                template.tags.turned_around, sample.row_id, sample.prompt, prefix + sample.row.answer_text,
            )
    return [e for e in examples if e is not None]


def _summary(task: Task, split: str, rows: int, examples: list[TrainingExample]) -> TaskRecord:
    by_template: dict[str, dict[int, int]] = {}
    for example in examples:
        shots = by_template.setdefault(example.template_id, {})
        shots[example.shots] = shots.get(example.shots, 0) + 1
    templates = tuple(
        TemplateRecord(t.id, t.hash, t.tags.options, t.tags.turned_around, dict(sorted(by_template[t.id].items())))
        for t in task.templates if t.id in by_template
    )
    return TaskRecord(task.name, task.cluster, task.hash, split, rows, len(examples), templates)


def mixture_hash(examples: tuple[TrainingExample, ...]) -> str:
    """sha256 over every field of every example, in order: equal hashes mean equal training data."""
    payload = json.dumps([asdict(e) for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def build_mixture(registry: Registry, config: MixtureConfig, chat_format: ChatFormat = PLAIN) -> Mixture:
    """Select, allocate, draw and render a mixture; see the module docstring for the rules."""
    if config.chat and not chat_format.available:
        raise HarnessError("mixture chat is on but the tokenizer has no chat template; turn chat off")
    held_out = expand_held_out(registry, config.held_out_clusters)
    trainable: list[tuple[Task, list[Template]]] = []
    excluded: list[tuple[str, str, str]] = []
    for task in registry.select(config.tasks):
        templates = [t for t in task.templates if config.include_turned_around or not t.tags.turned_around]
        templates = _without_held_out_templates(task, templates, config)
        reason = _why_not_trainable(task, held_out, templates)
        if reason:
            excluded.append((task.name, task.cluster, reason))
        else:
            trainable.append((task, templates))
    if not trainable:
        reasons = "; ".join(f"{name}: {why}" for name, _, why in excluded[:4])
        raise HarnessError(f"no task left to train on among --tasks {config.tasks!r} ({reasons}); "
                           "select other tasks or hold out fewer clusters")
    overrides = DataOverrides(config.data_dirs, config.data_folders)
    splits = {task.name: load_split(task, task.data.tuning_split or "", None, overrides) for task, _ in trainable}
    counts = allocate({name: len(split) for name, split in splits.items()}, config.examples_per_task_cap,
                      config.total_examples)
    examples, summaries = [], []
    for task, templates in trainable:
        if counts[task.name] == 0:
            excluded.append((task.name, task.cluster, f"0 examples at total_examples={config.total_examples}"))
            continue
        split = splits[task.name]
        task_examples = _task_examples(task, templates, split, counts[task.name], config, chat_format)
        examples += task_examples
        summaries.append(_summary(task, split.name, len(split), task_examples))
    random.Random(f"{config.seed}:order").shuffle(examples)
    ordered = tuple(examples)
    return Mixture(config, config.chat, ordered, tuple(summaries), tuple(config.held_out_clusters), held_out,
                   tuple(excluded), mixture_hash(ordered))


def mixture_table(mixture: Mixture) -> Table:
    """Per cluster and task: examples, templates used, zero/few-shot split, options-shown share, exclusions."""
    held = ", ".join(mixture.held_out_clusters) or "none"
    table = Table(title=f"Training mixture {mixture.hash[:12]}: {len(mixture.examples)} examples",
                  caption=f"held-out clusters (with related ones): {escape(held)}", title_justify="left")
    for column in ("cluster", "task", "examples", "templates", "0-shot", "few-shot", "options shown"):
        table.add_column(column, justify="left" if column in ("cluster", "task") else "right")
    clusters: dict[str, list[TaskRecord]] = {}
    for task in sorted(mixture.tasks, key=lambda t: (t.cluster, t.name)):
        clusters.setdefault(task.cluster, []).append(task)
    for cluster, tasks in clusters.items():
        for task in tasks:
            table.add_row(escape(cluster), task.name, *_stats([task]))
        if len(tasks) > 1:
            table.add_row(escape(cluster), "(all)", *_stats(tasks), style="bold")
    for name, cluster, why in sorted(mixture.excluded, key=lambda e: (e[1], e[0])):
        table.add_row(escape(cluster), name, escape(why), "", "", "", "", style="dim")
    return table


def _stats(tasks: list[TaskRecord]) -> tuple[str, ...]:
    examples = sum(t.examples for t in tasks)
    zero = sum(tp.examples_by_shots.get(0, 0) for t in tasks for tp in t.templates)
    shown = sum(tp.examples for t in tasks for tp in t.templates if tp.options_shown)
    used = sum(len(t.templates) for t in tasks)
    return (str(examples), str(used), f"{100 * zero / examples:.0f}%", f"{100 * (examples - zero) / examples:.0f}%",
            f"{100 * shown / examples:.0f}%")
