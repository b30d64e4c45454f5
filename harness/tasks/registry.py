"""Find, validate and hash task files and their templates.

Every task file is checked strictly when loaded: unknown keys, missing fields, wrong types and
Jinja syntax errors are reported as one line naming the file and the field, so a typo never turns
into a silently different prompt. `layouts:` (how rows as distributed map onto the fields the task
reads) is checked in `layouts`. Checks that need rows (a template using a field the rows lack)
happen in `prompts.check_fields` once rows are loaded and mapped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import BUILTIN_TASKS, BUILTIN_TEMPLATES, short_hash
from harness.tasks.fields import check_jinja, check_keys, expect, parse_options, read_mapping
from harness.tasks.kinds import get_kind, kind_names
from harness.tasks.layouts import parse_layouts
from harness.tasks.schema import DataSource, GenerationConfig, Task, Template, TemplateTags
from harness.tasks.sources import generator_names, loader_names

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_TASK_REQUIRED = {"name", "cluster", "kind", "data", "metrics", "templates"}
_TASK_OPTIONAL = {
    "description", "options", "answer", "target", "generation",
    "target_delimiter", "fewshot_delimiter", "metadata", "report_by", "related_clusters", "layouts",
}
_DATA_KEYS = {
    "generator", "seed", "sizes", "files", "hub", "loader", "options", "eval_split", "fewshot_split", "train_split",
    "id_field", "fewshot_sampler", "limit_by",
}
FEWSHOT_SAMPLERS = ("random", "first_n")
_TEMPLATE_REQUIRED = {"prompt", "tags"}
_TEMPLATE_OPTIONAL = {"options", "target", "target_delimiter"}
_TAG_KEYS = {"options", "style", "turned_around", "extra"}


def load_template(path: Path) -> Template:
    raw = read_mapping(path)
    check_keys(path, raw, _TEMPLATE_REQUIRED, _TEMPLATE_OPTIONAL, "template")
    template_id = path.stem
    if not _NAME.match(template_id):
        raise HarnessError(f"{path}: template id {template_id!r} must match [a-z0-9_-]+ (rename the file)")
    prompt = expect(path, "prompt", raw["prompt"], str, "a Jinja string")
    check_jinja(path, "prompt", prompt)
    tags_raw = expect(path, "tags", raw["tags"], dict, "a mapping")
    check_keys(path, tags_raw, {"options", "style"}, _TAG_KEYS - {"options", "style"}, "tags")
    tags = TemplateTags(
        options=expect(path, "tags.options", tags_raw["options"], bool, "true or false"),
        style=expect(path, "tags.style", tags_raw["style"], str, "a string"),
        turned_around=expect(
            path, "tags.turned_around", tags_raw.get("turned_around", False), bool, "true or false"
        ),
        extra=expect(path, "tags.extra", tags_raw.get("extra", {}), dict, "a mapping"),
    )
    options = parse_options(path, "options", raw["options"]) if "options" in raw else None
    target = raw.get("target")
    if target is not None:
        expect(path, "target", target, str, "a Jinja expression string")
        check_jinja(path, "target", target, expression=True)
    delimiter = raw.get("target_delimiter")
    if delimiter is not None:
        expect(path, "target_delimiter", delimiter, str, "a string")
    rendering = {"prompt": prompt, "options": options, "target": target, "target_delimiter": delimiter}
    digest = short_hash(json.dumps(rendering, sort_keys=True).encode())
    return Template(template_id, path, prompt, tags, digest, options, target, delimiter)


def _load_templates(path: Path, folder: str, template_roots: Sequence[Path]) -> tuple[Template, ...]:
    for root in template_roots:
        directory = root / folder
        if directory.is_dir():
            files = sorted(directory.glob("*.yaml"))
            if not files:
                raise HarnessError(f"{path}: template folder {directory} holds no *.yaml templates")
            return tuple(load_template(f) for f in files)
    searched = ", ".join(str(r / folder) for r in template_roots)
    raise HarnessError(f"{path}: field 'templates' names folder {folder!r}, not found (looked in {searched})")


def _parse_data(path: Path, raw: Any) -> DataSource:
    raw = expect(path, "data", raw, dict, "a mapping")
    check_keys(path, raw, {"eval_split"}, _DATA_KEYS - {"eval_split"}, "data")
    sources = [k for k in ("generator", "files", "hub", "loader") if k in raw]
    if len(sources) != 1:
        raise HarnessError(f"{path}: field 'data' needs exactly one of generator, files, hub or loader, got {sources}")
    for field, known in (("loader", loader_names), ("generator", generator_names)):
        if field in raw and raw[field] not in known():
            raise HarnessError(f"{path}: field 'data.{field}' names unknown {field} {raw[field]!r}; "
                               f"known: {', '.join(sorted(known()))}")
    files = expect(path, "data.files", raw.get("files", {}), dict, "a mapping of split -> file path")
    hub = expect(path, "data.hub", raw.get("hub", {}), dict, "a mapping with path and optional name")
    if "hub" in raw and "path" not in hub:
        raise HarnessError(f"{path}: field 'data.hub' needs a 'path' (the hub dataset id)")
    sizes = expect(path, "data.sizes", raw.get("sizes", {}), dict, "a mapping of split -> row count")
    for split_field in ("eval_split", "fewshot_split", "train_split"):
        if "generator" in raw and split_field in raw and raw[split_field] not in sizes:
            raise HarnessError(f"{path}: field 'data.sizes' must give a row count for {split_field} "
                               f"{raw[split_field]!r}")
    sampler = expect(path, "data.fewshot_sampler", raw.get("fewshot_sampler", "random"), str, "a sampler name")
    if sampler not in FEWSHOT_SAMPLERS:
        raise HarnessError(f"{path}: field 'data.fewshot_sampler' is {sampler!r}; "
                           f"use one of {', '.join(FEWSHOT_SAMPLERS)}")
    resolved_files = {
        split: str((path.parent / f).resolve()) if not Path(f).is_absolute() else f for split, f in files.items()
    }
    return DataSource(
        eval_split=expect(path, "data.eval_split", raw["eval_split"], str, "a split name"),
        fewshot_split=raw.get("fewshot_split"),
        generator=raw.get("generator"),
        loader=raw.get("loader"),
        loader_options=expect(path, "data.options", raw.get("options", {}), dict, "a mapping"),
        seed=expect(path, "data.seed", raw.get("seed", 0), int, "an integer"),
        sizes={str(k): int(v) for k, v in sizes.items()},
        files=resolved_files,
        hub_path=hub.get("path"),
        hub_name=hub.get("name"),
        id_field=raw.get("id_field"),
        train_split=expect(path, "data.train_split", raw.get("train_split"), (str, type(None)), "a split name"),
        fewshot_sampler=sampler,
        limit_by=expect(path, "data.limit_by", raw.get("limit_by"), (str, type(None)), "a row field name"),
    )


def load_task(path: Path, template_roots: Sequence[Path] | None = None) -> Task:
    """Parse and validate one task file and its templates."""
    raw = read_mapping(path)
    check_keys(path, raw, _TASK_REQUIRED, _TASK_OPTIONAL, "task")
    name = expect(path, "name", raw["name"], str, "a string")
    if name != path.stem or not _NAME.match(name):
        raise HarnessError(f"{path}: field 'name' must equal the file name {path.stem!r} and match [a-z0-9_-]+")
    kind_name = raw["kind"]
    if kind_name not in kind_names():
        *others, last = (repr(name) for name in kind_names())
        raise HarnessError(f"{path}: field 'kind' must be {', '.join(others)} or {last}, got {kind_name!r}")
    kind = get_kind(kind_name)
    allowed_metrics = kind.allowed_metrics()
    metrics = expect(path, "metrics", raw["metrics"], list, "a list of metric names")
    if not metrics:
        raise HarnessError(f"{path}: field 'metrics' is empty; name at least one of {', '.join(allowed_metrics)}")
    for metric in metrics:
        if metric not in allowed_metrics:
            raise HarnessError(
                f"{path}: metric {metric!r} is not available for {kind_name} tasks; use {', '.join(allowed_metrics)}"
            )
    kind_fields = kind.parse_fields(path, raw)
    generation_raw = expect(path, "generation", raw.get("generation", {}), dict, "a mapping")
    check_keys(path, generation_raw, set(), {"max_new_tokens", "stop"}, "generation")
    stop = generation_raw.get("stop", ["\n"])
    stop = [stop] if isinstance(stop, str) else stop
    max_new_tokens = expect(path, "generation.max_new_tokens", generation_raw.get("max_new_tokens", 32), int,
                             "an integer")
    if max_new_tokens < 1:
        raise HarnessError(f"{path}: generation.max_new_tokens is {max_new_tokens}; give at least 1")
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens, stop=tuple(expect(path, "generation.stop", stop, list, "a list of strings")),
    )
    roots = list(template_roots or []) + [path.parent.parent / "templates", BUILTIN_TEMPLATES]
    folder = expect(path, "templates", raw["templates"], str, "a template folder name")
    templates = _load_templates(path, folder, list(dict.fromkeys(roots)))
    for template in templates:
        kind.check_template(template)
    return Task(
        name=name,
        cluster=expect(path, "cluster", raw["cluster"], str, "a cluster name"),
        description=str(raw.get("description", "")),
        kind=kind_name,
        data=_parse_data(path, raw["data"]),
        metrics=tuple(metrics),
        templates=templates,
        path=path,
        hash=short_hash(path.read_bytes()),
        **kind_fields,
        generation=generation,
        target_delimiter=expect(path, "target_delimiter", raw.get("target_delimiter", " "), str, "a string"),
        fewshot_delimiter=expect(
            path, "fewshot_delimiter", raw.get("fewshot_delimiter", "\n\n"), str, "a string"
        ),
        related_clusters=tuple(
            expect(path, "related_clusters", raw.get("related_clusters", []), list, "a list of cluster names")
        ),
        report_by=tuple(expect(path, "report_by", raw.get("report_by", []), list, "a list of row field names")),
        metadata=expect(path, "metadata", raw.get("metadata", {}), dict, "a mapping"),
        layouts=parse_layouts(path, raw["layouts"]) if "layouts" in raw else (),
    )


class Registry:
    """All tasks found in the given task folders (the built-in `tasks/` is always included last)."""

    def __init__(self, task_dirs: Iterable[Path] = ()) -> None:
        self.tasks: dict[str, Task] = {}
        user_dirs = [Path(d).resolve() for d in task_dirs]
        for directory in dict.fromkeys([*user_dirs, BUILTIN_TASKS.resolve()]):
            if not directory.is_dir():
                raise HarnessError(f"{directory}: task folder not found")
            for path in sorted(directory.glob("*.yaml")):
                task = load_task(path)
                previous = self.tasks.get(task.name)
                if previous is None:
                    self.tasks[task.name] = task
                elif directory != BUILTIN_TASKS.resolve():
                    raise HarnessError(f"{path}: task name {task.name!r} is already defined in {previous.path}")
                # else: a user's task of the same name shadows the built-in one on purpose.

    def related_clusters(self, cluster: str) -> set[str]:
        """Clusters held out together with `cluster` (FLAN holds NLI and paraphrase out together).

        Relations are symmetric and transitive: a task file may declare them from either side.
        """
        graph: dict[str, set[str]] = {}
        for task in self.tasks.values():
            for other in task.related_clusters:
                graph.setdefault(task.cluster, set()).add(other)
                graph.setdefault(other, set()).add(task.cluster)
        seen, frontier = {cluster}, [cluster]
        while frontier:
            for neighbour in graph.get(frontier.pop(), ()):
                if neighbour not in seen:
                    seen.add(neighbour)
                    frontier.append(neighbour)
        return seen

    def clusters(self) -> dict[str, list[Task]]:
        grouped: dict[str, list[Task]] = {}
        for task in sorted(self.tasks.values(), key=lambda t: (t.cluster, t.name)):
            grouped.setdefault(task.cluster, []).append(task)
        return grouped

    def get(self, name: str) -> Task:
        if name not in self.tasks:
            raise HarnessError(f"unknown task {name!r}; run `harness tasks` to list the available tasks")
        return self.tasks[name]

    def select(self, spec: str | Sequence[str]) -> list[Task]:
        """Tasks named by task names and/or cluster names (comma-separated), 'builtin' or 'all'.

        'builtin' is the procedural suite, whose rows are generated locally and so always available;
        'all' also takes the tasks whose rows come from the hub or a data folder.
        """
        names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
        if names in (["all"], ["builtin"]):
            chosen = [t for t in self.tasks.values() if names == ["all"] or t.data.generator]
            return sorted(chosen, key=lambda t: (t.cluster, t.name))
        clusters = self.clusters()
        selected: dict[str, Task] = {}
        for name in names:
            if name in self.tasks:
                selected[name] = self.tasks[name]
            elif name in clusters:
                selected.update((t.name, t) for t in clusters[name])
            else:
                raise HarnessError(
                    f"unknown task or cluster {name!r}; run `harness tasks` to list tasks and clusters"
                )
        if not selected:
            raise HarnessError("no tasks selected; pass --tasks NAMES_OR_CLUSTERS or 'all'")
        return list(selected.values())
