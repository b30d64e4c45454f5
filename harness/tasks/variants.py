"""Generated format variants of a task's templates, written as ordinary template files.

`harness templates vary` draws `n` variants, spread over the task's templates, from the grammar
of `format_grammar`: each is its source template with only the form changed (separators, label
casing, line breaks, enumerators, answer cue, marked instruction wordings), so a model's spread
across them measures format sensitivity (FormatSpread), not task difficulty. The draw is seeded
per source template and round robin over the templates in a seeded order, so the same seed writes
the same files byte for byte.

A variant keeps its source's options, target and tags, and records in `tags.extra.format` every
choice that made it (only the axes that applied to its source) plus `source` and `source_hash`,
and `tags.extra.generated: true`. The variants are written under one output folder laid out like
the project root, `tasks/<task>.yaml` (the task file, copied byte for byte) and
`templates/<folder>/<source>__vNN.yaml`, so `harness run --task-dir OUT/tasks` evaluates the task
on its variants: a task file in --task-dir shadows the built-in one of the same name, and its
templates folder is found beside it. With `sources`, the task's own templates are copied there too
(byte for byte, so their hashes and scores are the built-in ones), and the run covers the
hand-written formats and the generated ones together.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.tasks.fields import read_mapping
from harness.tasks.format_grammar import SLOTS_KEY, FormatStructure, parse_format, render_format
from harness.tasks.registry import load_template
from harness.tasks.schema import Task, Template

MAX_DRAWS = 100_000
"""Most combinations tried per source template (the grammar's spaces are far smaller in practice)."""
NOT_VARIED = "no field line, option list, answer cue or marked instruction the grammar recognises"


@dataclass(frozen=True)
class Variant:
    """One generated template: its id, source, the choices that made it and its file's mapping."""

    id: str
    source: Template
    format: dict[str, Any]
    data: dict[str, Any]


@dataclass(frozen=True)
class VariantPlan:
    task: Task
    seed: int
    requested: int
    variants: tuple[Variant, ...]
    unvaried: tuple[tuple[str, str], ...]
    """(template id, why) for source templates no axis applies to."""


def _rendering_key(prompt: str, template: Template) -> str:
    """What makes two templates render alike: the fields a template's hash covers."""
    options = list(template.options) if isinstance(template.options, tuple) else template.options
    return json.dumps([prompt, options, template.target, template.target_delimiter])


def _format_tags(structure: FormatStructure, choices: dict[str, Any], source: Template) -> dict[str, Any]:
    recorded = {name: value for name, value in choices.items() if not name.startswith("instruction_")}
    if structure.slots:
        recorded["instructions"] = [choices[f"instruction_{n}"] for n in range(1, len(structure.slots) + 1)]
    return {**recorded, "source": source.id, "source_hash": source.hash}


def _data(source: Template, prompt: str, format_tags: dict[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in source.tags.extra.items() if k not in (SLOTS_KEY, "format", "generated")}
    data: dict[str, Any] = {
        "prompt": prompt,
        "tags": {
            "options": source.tags.options, "style": source.tags.style,
            "turned_around": source.tags.turned_around,
            "extra": {**extra, "format": format_tags, "generated": True},
        },
    }
    if source.options is not None:
        data["options"] = list(source.options) if isinstance(source.options, tuple) else source.options
    if source.target is not None:
        data["target"] = source.target
    if source.target_delimiter is not None:
        data["target_delimiter"] = source.target_delimiter
    return data


def _draws(structure: FormatStructure, seed: int, template_id: str) -> Iterator[int]:
    """Every combination but the template as written (index 0), in an order seeded per template."""
    rng = random.Random(f"{seed}:{template_id}")
    yield from rng.sample(range(1, structure.size), min(structure.size - 1, MAX_DRAWS))


def plan_variants(task: Task, n: int, seed: int) -> VariantPlan:
    """`n` variants of `task`'s templates (fewer when the grammar allows fewer distinct forms)."""
    if n < 1:
        raise HarnessError(f"--n {n}: give the number of variants to write, 1 or more")
    parsed, unvaried = [], []
    for template in sorted(task.templates, key=lambda t: t.id):
        structure = parse_format(str(template.path), template.prompt, template.tags.extra.get(SLOTS_KEY))
        if structure.axes:
            parsed.append((template, structure, _draws(structure, seed, template.id)))
        else:
            unvaried.append((template.id, NOT_VARIED))
    if not parsed:
        raise HarnessError(f"task {task.name!r}: none of its {len(task.templates)} templates has a form the "
                           f"grammar can vary ({NOT_VARIED}); see harness/tasks/format_grammar.py")
    random.Random(seed).shuffle(parsed)
    seen = {_rendering_key(t.prompt, t) for t in task.templates}
    counts: dict[str, int] = {}
    variants: list[tuple[Template, FormatStructure, dict[str, Any], str]] = []
    active = deque(parsed)
    while len(variants) < n and active:
        template, structure, draws = active.popleft()
        for index in draws:
            choices = structure.choices(index)
            prompt = render_format(structure, choices)
            key = _rendering_key(prompt, template)
            if key not in seen:
                seen.add(key)
                variants.append((template, structure, choices, prompt))
                counts[template.id] = counts.get(template.id, 0) + 1
                active.append((template, structure, draws))
                break
    width = max(2, len(str(max(counts.values()) - 1)))
    numbered: dict[str, int] = {}
    built = []
    for template, structure, choices, prompt in variants:
        number = numbered[template.id] = numbered.get(template.id, -1) + 1
        format_tags = _format_tags(structure, choices, template)
        built.append(Variant(f"{template.id}__v{number:0{width}d}", template, format_tags,
                             _data(template, prompt, format_tags)))
    return VariantPlan(task, seed, n, tuple(sorted(built, key=lambda v: v.id)), tuple(unvaried))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a prompt reads in the file as it renders."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def file_text(plan: VariantPlan, variant: Variant) -> str:
    source = variant.source
    header = [
        f"# Generated by `harness templates vary {plan.task.name} --seed {plan.seed}` from template "
        f"{source.id!r} ({source.hash}):",
        "# the same wording in another form (tags.extra.format); see harness/tasks/format_grammar.py.",
    ]
    body = yaml.dump(variant.data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body


def _task_file(task: Task) -> bytes:
    """The task file for the variants folder: its own bytes, unless it names row files by relative
    paths, which would no longer resolve from the new folder; then those paths are made absolute."""
    raw = read_mapping(task.path)
    files = raw.get("data", {}).get("files", {}) if isinstance(raw.get("data"), dict) else {}
    if all(Path(f).is_absolute() for f in files.values()):
        return task.path.read_bytes()
    raw["data"]["files"] = dict(task.data.files)
    note = f"# Copied from {task.path} by `harness templates vary`, its row files made absolute paths.\n"
    return (note + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)).encode("utf-8")


def _generated(path: Path) -> bool:
    try:
        extra = read_mapping(path).get("tags", {}).get("extra", {})
    except (HarnessError, AttributeError):
        return False
    return isinstance(extra, dict) and extra.get("generated") is True


@dataclass(frozen=True)
class Written:
    task_file: Path
    template_dir: Path
    files: tuple[tuple[Variant, Path], ...]
    sources: tuple[Path, ...] = ()


def write_variants(plan: VariantPlan, out: Path, *, overwrite: bool = False, sources: bool = False) -> Written:
    """Write `out/tasks/<task>.yaml` and one template file per variant into `out/templates/<folder>/`,
    and with `sources` a copy of each of the task's own templates.

    A templates folder holding any template not written here (a variant, or a byte-for-byte copy of
    one of the task's templates) is refused (an --out of `.` would otherwise write into the built-in
    templates); existing files are replaced only with `overwrite`, and then every earlier one there
    goes, so the folder holds exactly this set.
    """
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out}: is a file; give a folder for the variants")
    task = plan.task
    template_dir = out / "templates" / task.templates[0].path.parent.name
    task_file = out / "tasks" / f"{task.name}.yaml"
    task_bytes = _task_file(task)
    existing = sorted(template_dir.glob("*.yaml")) if template_dir.is_dir() else []
    copies = {template_dir / template.path.name: template.path.read_bytes() for template in task.templates}
    foreign = [path for path in existing if not _generated(path) and copies.get(path) != path.read_bytes()]
    if foreign:
        raise HarnessError(f"{foreign[0]}: a template not generated by `harness templates vary` is in the folder; "
                           "give --out a folder of its own for the variants")
    if not overwrite:
        clashes = existing + ([task_file] if task_file.exists() and task_file.read_bytes() != task_bytes else [])
        if clashes:
            raise HarnessError(f"{clashes[0]}: already exists; pass --overwrite to replace the variants in "
                               f"{template_dir}, or choose another --out")
    texts = {template_dir / f"{variant.id}.yaml": (variant, file_text(plan, variant)) for variant in plan.variants}
    kept = copies if sources else {}
    for path in existing:
        if path not in texts and path not in kept:
            path.unlink()
    template_dir.mkdir(parents=True, exist_ok=True)
    task_file.parent.mkdir(parents=True, exist_ok=True)
    task_file.write_bytes(task_bytes)
    files = []
    for path, (variant, text) in texts.items():
        path.write_text(text, encoding="utf-8")
        loaded = load_template(path)  # the registry's own checks, and a round trip of the prompt
        assert loaded.prompt == variant.data["prompt"], f"{path}: prompt changed on the YAML round trip"
        files.append((variant, path))
    for path, data in kept.items():
        path.write_bytes(data)
    return Written(task_file, template_dir, tuple(files), tuple(kept))
