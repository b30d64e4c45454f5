"""Import promptsource templates (`templates.yaml`) as this project's template files.

promptsource (Bach et al., 2022) is where T0's prompts live: per dataset, one `templates.yaml` whose
entries carry custom YAML tags (`!Template`, `!TemplateMetadata`) and a Jinja source with `|||`
between the input and the target. This module reads those files with PyYAML alone (the promptsource
package pins old versions of everything) and writes one template file per promptsource template.

The converted prompt renders, under the harness, to exactly what promptsource's `Template.apply`
gives as the input part, because the conversion reproduces each step of `apply`:
- `apply` renders the whole Jinja, splits the output on `|||` and strips each part. When the first
  `|||` of the source stands outside any Jinja tag, the input part is the source before it; when it
  sits inside a block (`{% if %} ... ||| ... {% endif %}`), the whole source is rendered into a
  variable and split like `apply` does.
- Stripping the rendered input is `{% filter trim %}`, added only when the input begins or ends with
  a Jinja construct (a block tag's newline, a field with surrounding spaces); literal text at both
  ends is stripped in the file itself.
- `answer_choices` inside the prompt is the rendered choice list: for a choice task that is the
  harness's `options` (converted from the same `answer_choices`), for a generate task it is
  rendered from the `answer_choices` source in the prompt.
- promptsource's Jinja extras (`zip`, the `choice` and `most_frequent` filters) are provided by
  `harness.tasks.jinja_env.add_jinja_extras`, which the harness's Jinja environment includes. `choice` is
  `random.choice` in promptsource; here it is seeded by the row's content and the draw's position
  in the rendering, so a template that shuffles (`range(0, 2) | choice`) still varies across rows but
  renders a row the same way in every run, as the harness's resumable run records require.

Deliberate differences, kept out of the prompt text unless asked for: `apply` truncates every
`{{ ... }}` output to 2048 characters (`truncate_fields=2048` reproduces that), and promptsource's
Jinja is lenient where the harness's is strict (a field the rows lack is an error here, not an
empty string). Field values containing `|||` are protected by `apply`; rows almost never hold one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from harness.errors import HarnessError
from harness.tasks.fields import load_yaml
from harness.tasks.jinja_env import make_environment
from harness.tasks.registry import load_template

SEPARATOR = "|||"
PROMPTSOURCE_TRUNCATION = 2048
"""promptsource's TEXT_VAR_LENGTH: `apply` truncates every `{{ ... }}` output to this many characters."""

_JINJA_START = re.compile(r"^\{[{%#]")
_JINJA_END = re.compile(r"[}%#]\}$")
_JOIN_CHOICES = re.compile(r"^\{\{-?\s*(?P<expr>.+?)\s*\|\s*join\(\s*(?P<q>['\"])\s*\|\|\|\s*(?P=q)\s*\)\s*-?\}\}$",
                           re.DOTALL)
_SINGLE_EXPRESSION = re.compile(r"^\{\{-?(?P<expr>.+?)-?\}\}$", re.DOTALL)
_CHOICE_TAIL = re.compile(r"^(?P<expr>.+?)\s*\|\s*choice\s*$", re.DOTALL)
_ANSWER_CHOICES = re.compile(r"\banswer_choices\b")
_RENDERED = "promptsource_rendered"




# -- reading templates.yaml -----------------------------------------------------------------------


# libyaml's parser when PyYAML was built with it: promptsource's 279 files parse several times faster.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, plus promptsource's two tags read as plain mappings."""


def _mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"expected a mapping after {node.tag}", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!Template", _mapping)
_Loader.add_constructor("!TemplateMetadata", _mapping)


@dataclass(frozen=True)
class PromptsourceTemplate:
    """One promptsource template, as its file holds it."""

    id: str
    name: str
    jinja: str
    answer_choices: str | None
    reference: str | None
    original_task: bool | None
    choices_in_prompt: bool | None
    metrics: tuple[str, ...]
    languages: tuple[str, ...]


@dataclass(frozen=True)
class PromptsourceFile:
    path: Path
    dataset: str | None
    subset: str | None
    templates: tuple[PromptsourceTemplate, ...]
    unreadable: tuple[tuple[str, str, str], ...]
    """(key, name, reason) of entries too malformed to be templates at all."""


def read_templates(path: Path) -> PromptsourceFile:
    """Parse a promptsource `templates.yaml`; malformed entries are listed, not fatal."""
    loaded = load_yaml(path, _Loader, "promptsource YAML")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("templates") or {}, dict):
        raise HarnessError(f"{path}: not a promptsource templates.yaml (expected a 'templates' mapping)")
    templates, unreadable = [], []
    for key, raw in (loaded.get("templates") or {}).items():
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(raw.get("jinja"), str) or not isinstance(name, str):
            unreadable.append((str(key), str(name), "entry lacks a string 'name' or 'jinja'"))
            continue
        metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        choices = raw.get("answer_choices")
        templates.append(PromptsourceTemplate(
            id=str(raw.get("id") or key),
            name=name,
            jinja=raw["jinja"],
            answer_choices=choices if isinstance(choices, str) else None,
            reference=raw.get("reference"),
            original_task=metadata.get("original_task"),
            choices_in_prompt=metadata.get("choices_in_prompt"),
            metrics=tuple(metadata.get("metrics") or ()),
            languages=tuple(metadata.get("languages") or ()),
        ))
    return PromptsourceFile(path, loaded.get("dataset"), loaded.get("subset"), tuple(templates), tuple(unreadable))


# -- converting one template ----------------------------------------------------------------------


class NotConvertible(Exception):
    """A template the harness cannot express faithfully; the message says why (one line)."""


def _compiles(env: jinja2.Environment, source: str, expression: bool = False) -> bool:
    """Whether `source` is valid Jinja: a template, or with `expression` a single expression."""
    try:
        env.compile_expression(source) if expression else env.parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return True


def _trimmed(source: str) -> str:
    """Source whose rendering equals promptsource's `.strip()` of the rendering of `source`."""
    stripped = source.strip()
    if _JINJA_START.search(stripped) or _JINJA_END.search(stripped):
        return "{% filter trim %}" + stripped + "{% endfilter %}"
    return stripped


def _truncating(source: str, limit: int | None) -> str:
    """promptsource's `apply(truncate=True)`: every `}}` gets `| string | truncate(limit)` before it."""
    return source if limit is None else source.replace("}}", f" | string | truncate({limit}) }}}}")


def _options(template: PromptsourceTemplate, env: jinja2.Environment) -> list[str] | str:
    """A choice template's options: Jinja strings when the choices are fixed in number, else a
    list expression for the `{{ X | join("|||") }}` idiom, else not convertible."""
    source = template.answer_choices
    if source is None:
        raise NotConvertible("no answer_choices, so nothing to rank; a choice task needs options")
    parts = source.split(SEPARATOR)
    if len(parts) >= 2 and all(_compiles(env, p) for p in parts):
        return [_trimmed(p) for p in parts]
    match = _JOIN_CHOICES.match(source.strip())
    if match:
        expression = f'({match["expr"].strip()}) | map("string") | map("trim") | list'
        if _compiles(env, expression, expression=True):
            return expression
    raise NotConvertible("answer_choices builds its choices with Jinja statements; the harness needs "
                         "fixed Jinja strings or one list expression")


def _answer_choices_prelude(template: PromptsourceTemplate, kind: str) -> str:
    """Defines `answer_choices` for a prompt that uses it, as promptsource's `apply` does."""
    if kind == "choice":
        return "{% set answer_choices = options %}"
    if template.answer_choices is None:
        return "{% set answer_choices = none %}"
    return ("{% set answer_choices %}" + template.answer_choices + "{% endset %}"
            '{% set answer_choices = answer_choices.split("|||") | map("trim") | list %}')


def _target(target_source: str | None, env: jinja2.Environment) -> str | None:
    """A generate template's own target expression, when promptsource's target is one `{{ expr }}`.

    `X | choice` (one of several right answers, drawn at random) becomes the list X: the harness
    scores against every reference and keeps the best, which is what the random draw stood for.
    """
    if target_source is None:
        return None
    match = _SINGLE_EXPRESSION.match(target_source.strip())
    if not match or _ANSWER_CHOICES.search(target_source):
        return None
    expression = match["expr"].strip()
    if not _compiles(env, expression, expression=True):
        return None
    choice = _CHOICE_TAIL.match(expression)
    if choice and _compiles(env, choice["expr"], expression=True):
        return f'({choice["expr"].strip()}) | map("string") | map("trim") | list'
    return f"({expression}) | string | trim"


@dataclass(frozen=True)
class Converted:
    """A converted template: what its file holds, and notes on what the conversion changed."""

    template: PromptsourceTemplate
    data: dict[str, Any]
    notes: tuple[str, ...] = ()


def convert_template(
    template: PromptsourceTemplate, kind: str, *, dataset: str | None = None, subset: str | None = None,
    truncate_fields: int | None = None,
) -> Converted:
    """This project's template mapping for one promptsource template, or `NotConvertible`."""
    env = make_environment()
    if not _compiles(env, template.jinja):
        raise NotConvertible("its Jinja does not parse")
    if template.answer_choices is not None and not _compiles(env, template.answer_choices):
        raise NotConvertible("its answer_choices Jinja does not parse")
    notes: list[str] = []
    head, separator, tail = template.jinja.partition(SEPARATOR)
    if not separator:
        notes.append("no '|||' in the Jinja: the whole template is the prompt and there is no target")
    if _compiles(env, head):
        rendered, body = head, _trimmed(_truncating(head, truncate_fields))
        target_source: str | None = tail if separator else None
    else:
        # The first `|||` sits inside a Jinja tag or block: render everything, split like `apply`.
        rendered, target_source = template.jinja, None
        notes.append("its '|||' sits inside a Jinja block: rows the block skips get an empty prompt "
                     "(promptsource's users drop such rows)")
        body = ("{% set " + _RENDERED + " %}" + _truncating(template.jinja, truncate_fields) + "{% endset %}"
                "{{ " + _RENDERED + '.split("|||")[0] | trim }}')
    prelude = _answer_choices_prelude(template, kind) if _ANSWER_CHOICES.search(rendered) else ""
    data: dict[str, Any] = {"prompt": prelude + body}
    if kind == "choice":
        data["options"] = _options(template, env)
    else:
        target = _target(target_source, env)
        if target is not None:
            data["target"] = target
        else:
            notes.append("its target is not one {{ expression }}: scored against the task's target")
    option_sources = data["options"] if isinstance(data.get("options"), list) else []
    try:
        for source in (data["prompt"], *option_sources):
            env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise NotConvertible(f"the converted prompt does not compile ({exc.message})") from None
    input_text = head if separator else template.jinja
    extra: dict[str, Any] = {
        "promptsource_id": template.id,
        "promptsource_name": template.name,
        "promptsource_dataset": dataset,
        "promptsource_subset": subset,
        "promptsource_reference": template.reference,
        "promptsource_original_task": template.original_task,
        "promptsource_choices_in_prompt": template.choices_in_prompt,
        "promptsource_metrics": list(template.metrics),
        "promptsource_languages": list(template.languages),
        "promptsource_answer_choices": template.answer_choices,
        "promptsource_target": tail.strip() if separator else None,
    }
    data["tags"] = {
        "options": bool(template.choices_in_prompt),
        "style": "question" if "?" in input_text else "instruction",
        "turned_around": not template.original_task,
        "extra": {k: v for k, v in extra.items() if v is not None},
    }
    return Converted(template, data, tuple(notes))


# -- writing a folder of templates ----------------------------------------------------------------


def slug(name: str) -> str:
    """A template id from a promptsource name: lower case, runs of other characters as `_`."""
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return text or "template"


def unique_slugs(names: Sequence[str]) -> list[str]:
    """One id per name, in order; repeats get `_2`, `_3`, ... so no file overwrites another."""
    seen: set[str] = set()
    result = []
    for name in names:
        base = slug(name)
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = f"{base}_{n}"
        seen.add(candidate)
        result.append(candidate)
    return result


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a prompt reads in the file as it renders."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _file_text(converted: Converted, dataset: str) -> str:
    template = converted.template
    header = [
        f"# Imported from promptsource {dataset}: template {template.name!r} ({template.id})",
        "# by `harness templates import-promptsource`. The prompt renders what promptsource's",
        "# Template.apply gives as the input (see harness/promptsource.py); edit with care.",
    ]
    body = yaml.dump(converted.data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote and what it could not convert (one reason per template)."""

    source: Path
    out: Path
    written: tuple[tuple[str, str, Path], ...] = ()
    """(promptsource id, name, file) per converted template."""
    skipped: tuple[tuple[str, str, str], ...] = ()
    """(promptsource id, name, reason) per template left out."""
    notes: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(file name, note) for converted templates the conversion changed in some way."""

    @property
    def total(self) -> int:
        return len(self.written) + len(self.skipped)


def import_promptsource(
    path: Path, out: Path, kind: str, *, overwrite: bool = False, truncate_fields: int | None = None,
) -> ImportReport:
    """Convert every template of a promptsource `templates.yaml` into `out/<slug>.yaml`.

    `kind` is the harness task's kind ("choice" or "generate"): it decides whether answer_choices
    become the template's options. Templates that cannot be converted are reported, not fatal.
    """

    if kind not in ("choice", "generate"):
        raise HarnessError(f"task kind must be 'choice' or 'generate', got {kind!r}")
    source = read_templates(Path(path))
    ids = unique_slugs([t.name for t in source.templates])
    converted: list[tuple[str, Converted]] = []
    skipped = [(key, name, reason) for key, name, reason in source.unreadable]
    for template_id, template in zip(ids, source.templates, strict=True):
        try:
            converted.append((template_id, convert_template(
                template, kind, dataset=source.dataset, subset=source.subset, truncate_fields=truncate_fields)))
        except NotConvertible as exc:
            skipped.append((template.id, template.name, str(exc)))
    targets = {template_id: Path(out) / f"{template_id}.yaml" for template_id, _ in converted}
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise HarnessError(f"{existing[0]}: already exists; pass --overwrite or choose another --out folder")
    Path(out).mkdir(parents=True, exist_ok=True)
    dataset = "/".join(str(part) for part in (source.dataset, source.subset) if part) or source.path.name
    written, notes = [], []
    for template_id, item in converted:
        target = targets[template_id]
        target.write_text(_file_text(item, dataset), encoding="utf-8")
        loaded = load_template(target)  # the harness's own validation, and a round-trip check
        assert loaded.prompt == item.data["prompt"], f"{target}: prompt changed on the YAML round trip"
        written.append((item.template.id, item.template.name, target))
        notes.extend((target.name, note) for note in item.notes)
    return ImportReport(source.path, Path(out), tuple(written), tuple(skipped), tuple(notes))
