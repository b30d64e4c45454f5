"""promptsource import: converted templates render what promptsource's own `Template.apply` gives.

Goldens are written by hand from the template text. Beyond them, every RTE, CB and COPA template is
rendered on every shared validation row both by the harness and by `promptsource_apply` below, a
transcription of promptsource 0.2.3's `Template.apply` and its Jinja environment (the package
itself pins versions this project cannot install).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

import harness.tasks.jinja_env
import harness.tasks.registry
from harness.errors import HarnessError
from harness.tasks.prompts import PromptRenderer
from harness.tasks.promptsource import (
    import_promptsource,
    read_templates,
    unique_slugs,
)
from harness.tasks.registry import load_task, load_template
from harness.tasks.rows import load_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROMPTSOURCE = SHARED / "promptsource" / "templates"
SUPERGLUE = PROMPTSOURCE / "super_glue"
needs_promptsource = pytest.mark.skipif(
    not SUPERGLUE.is_dir(), reason=f"shared promptsource templates not found at {PROMPTSOURCE} (shared/ is absent)"
)
needs_superglue_rows = pytest.mark.skipif(
    not (SHARED / "superglue" / "rte" / "val.jsonl").is_file(),
    reason=f"shared SuperGLUE rows not found at {SHARED / 'superglue'} (shared/ is absent)",
)


def test_harness_environment_has_promptsource_extras():
    env = harness.tasks.jinja_env.make_environment()
    assert {"choice", "most_frequent"} <= set(env.filters) and "zip" in env.globals


# -- promptsource's own rendering, transcribed ------------------------------------------------------


def _promptsource_environment(draw: random.Random) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.BaseLoader)
    env.globals.update(zip=zip)

    def most_frequent(items):
        if not items:
            return None
        counts = Counter(items).most_common()
        return [c[0] for c in counts if c[1] == counts[0][1]]

    env.filters["choice"] = draw.choice
    env.filters["most_frequent"] = most_frequent
    return env


PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"


def promptsource_apply(
    jinja: str, answer_choices: str | None, example: dict[str, Any], truncate: bool = True
) -> tuple[list[str], list[str] | None]:
    """promptsource 0.2.3 `Template.apply` (parts) and `get_answer_choices_list`, line for line."""
    env = _promptsource_environment(random.Random(0))
    protected = {k: v.replace("|||", PIPE_PROTECTOR) if isinstance(v, str) else v for k, v in example.items()}
    choices = None
    if answer_choices is not None:
        rendered_choices = env.from_string(answer_choices).render(**protected)
        choices = [c.strip().replace(PIPE_PROTECTOR, "|||") for c in rendered_choices.split("|||")]
    if truncate:
        jinja = jinja.replace("}}", " | string | truncate(2048) }}")
    rendered = env.from_string(jinja).render(**protected, answer_choices=choices)
    return [part.replace(PIPE_PROTECTOR, "|||").strip() for part in rendered.split("|||")], choices


class _RawLoader(yaml.SafeLoader):
    """Reads promptsource's tags as mappings, independently of the converter's own reader."""


_RawLoader.add_constructor("!Template", lambda loader, node: loader.construct_mapping(node, deep=True))
_RawLoader.add_constructor("!TemplateMetadata", lambda loader, node: loader.construct_mapping(node, deep=True))


def raw_file(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_RawLoader)


# -- helpers ----------------------------------------------------------------------------------------


def convert(tmp_path: Path, subset: str, kind: str = "choice", **options):
    out = tmp_path / "templates" / f"{subset}_ps"
    return import_promptsource(SUPERGLUE / subset / "templates.yaml", out, kind, **options), out


def task_over(tmp_path: Path, subset: str, rows: Path, n_options: int, kind: str = "choice"):
    """A throwaway task whose templates are the converted ones, to render through the harness."""
    text = (
        f"name: {subset}_ps\ncluster: test\nkind: {kind}\n"
        f"data: {{files: {{validation: {rows}}}, eval_split: validation}}\n"
        + (f"options: {[str(i) for i in range(n_options)]}\nanswer: '0'\nmetrics: [acc]\n" if kind == "choice"
           else "target: premise\nmetrics: [exact_match]\n")
        + f"templates: {subset}_ps\n"
    )
    (tmp_path / "tasks").mkdir(exist_ok=True)
    path = tmp_path / "tasks" / f"{subset}_ps.yaml"
    path.write_text(text)
    return load_task(path)


def by_name(report, name: str) -> Path:
    (path,) = [p for _, n, p in report.written if n == name]
    return path


# -- goldens ----------------------------------------------------------------------------------------


@needs_promptsource
def test_rte_converts_every_template_and_keeps_ids_and_names(tmp_path):
    report, out = convert(tmp_path, "rte")
    source = raw_file(SUPERGLUE / "rte" / "templates.yaml")
    assert len(report.written) == len(source["templates"]) == 10 and not report.skipped
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(p.name for _, _, p in report.written)
    for promptsource_id, name, path in report.written:
        template = load_template(path)
        assert template.tags.extra["promptsource_id"] == promptsource_id == source["templates"][promptsource_id]["id"]
        assert template.tags.extra["promptsource_name"] == name == source["templates"][promptsource_id]["name"]
        assert template.tags.extra["promptsource_dataset"] == "super_glue"
        assert template.tags.options is True and template.tags.turned_around is False
    assert by_name(report, "GPT-3 style").name == "gpt_3_style.yaml"


@needs_promptsource
def test_golden_rte_gpt3_style(tmp_path):
    # Source: '{{premise}}\n\nQuestion: {{hypothesis}} True or False? ||| ...' (YAML folds the blank
    # line to one newline); answer_choices 'True ||| False'.
    report, out = convert(tmp_path, "rte")
    task = task_over(tmp_path, "rte", SHARED / "superglue" / "rte" / "val.jsonl", 2)
    template = task.template("gpt_3_style")
    row = {"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": 0, "idx": 0}
    rendered = PromptRenderer().render_row(task, template, row, "0")
    assert rendered.prompt == "The cat sat on the mat.\nQuestion: A cat is sitting. True or False?"
    assert rendered.options == ("True", "False")
    assert template.tags.style == "question"


@needs_promptsource
def test_golden_copa_block_around_the_separator(tmp_path):
    # Source: '{% if question == "effect" %} \n{{ premise }} What could happen next, "{{ answer_choices[0] }}"
    # or "{{ answer_choices[1] }}"? ||| {% if label != -1 %}{{ answer_choices[label] }}{%endif%}\n{% endif %}'
    # The '|||' is inside the if-block, so promptsource renders everything, splits and strips; a
    # "cause" row renders nothing at all.
    report, out = convert(tmp_path, "copa")
    task = task_over(tmp_path, "copa", SHARED / "superglue" / "copa" / "val.jsonl", 2)
    template = task.template(by_name(report, "\u2026What could happen next, C1 or C2?").stem)
    row = {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
           "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0}
    rendered = PromptRenderer().render_row(task, template, row, "0")
    assert rendered.prompt == ('The man turned on the faucet. What could happen next, '
                               '"The toilet filled with water." or "Water flowed from the spout."?')
    assert rendered.options == ("The toilet filled with water.", "Water flowed from the spout.")
    assert PromptRenderer().render_row(task, template, {**row, "question": "cause"}, "0").prompt == ""
    assert any("inside a Jinja block" in note for _, note in report.notes)


# -- against promptsource's rendering on real rows --------------------------------------------------


@needs_promptsource
@needs_superglue_rows
@pytest.mark.parametrize(("subset", "n_options", "n_templates"), [("rte", 2, 10), ("cb", 3, 15), ("copa", 2, 12)])
def test_every_template_renders_like_promptsource_on_shared_rows(tmp_path, subset, n_options, n_templates):
    report, out = convert(tmp_path, subset)
    assert len(report.written) == n_templates and not report.skipped
    task = task_over(tmp_path, subset, SHARED / "superglue" / subset / "val.jsonl", n_options)
    rows = load_split(task, "validation").rows
    source = {t.id: t for t in read_templates(SUPERGLUE / subset / "templates.yaml").templates}
    renderer = PromptRenderer()
    checked = 0
    for promptsource_id, _, path in report.written:
        template = task.template(path.stem)
        original = source[promptsource_id]
        for i, row in enumerate(rows):
            parts, choices = promptsource_apply(original.jinja, original.answer_choices, row)
            rendered = renderer.render_row(task, template, row, str(i))
            assert rendered.prompt == parts[0], (path.name, i)
            assert list(rendered.options) == choices, (path.name, i)
            checked += 1
    assert checked == n_templates * len(rows)


@needs_promptsource
def test_truncation_option_matches_promptsource_apply(tmp_path):
    report, out = convert(tmp_path, "rte", truncate_fields=2048)
    task = task_over(tmp_path, "rte", SHARED / "superglue" / "rte" / "val.jsonl", 2)
    template = task.template("gpt_3_style")
    row = {"premise": "word " * 1000, "hypothesis": "Short.", "label": 0, "idx": 0}
    original = {t.name: t for t in read_templates(SUPERGLUE / "rte" / "templates.yaml").templates}["GPT-3 style"]
    expected = promptsource_apply(original.jinja, original.answer_choices, row)[0][0]
    assert PromptRenderer().render_row(task, template, row, "0").prompt == expected
    assert len(expected) < 2100  # the premise really was cut


# -- promptsource's Jinja extras --------------------------------------------------------------------


def test_choice_is_reproducible_per_row_and_varies_across_rows(tmp_path):
    env = harness.tasks.jinja_env.make_environment()
    template = env.from_string("{{ range(100) | list | choice }} {{ range(100) | list | choice }}")
    draws = [template.render(premise=f"row {i}") for i in range(30)]
    assert draws == [template.render(premise=f"row {i}") for i in range(30)]  # same row, same draw
    assert len(set(draws)) > 20  # different rows, different draws
    assert any(a != b for a, b in (d.split() for d in draws))  # two draws in one rendering differ
    with pytest.raises(jinja2.TemplateRuntimeError, match="empty sequence"):
        env.from_string("{{ [] | choice }}").render()


def test_most_frequent_and_zip():
    env = harness.tasks.jinja_env.make_environment()
    assert env.from_string("{{ ['b', 'a', 'b', 'a', 'c'] | most_frequent }}").render() == "['b', 'a']"
    assert env.from_string("{{ [] | most_frequent }}").render() == "None"
    source = "{% for q, a in zip(qs, answers) %}{{ q }}={{ a }};{% endfor %}"
    assert env.from_string(source).render(qs=["x", "y"], answers=[1, 2]) == "x=1;y=2;"


# -- reporting and files ----------------------------------------------------------------------------

BAD_FILE = """\
dataset: demo
templates:
  a1: !Template
    answer_choices: null
    id: a1
    jinja: 'Is {{ text }} good? ||| {{ label }}'
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [Accuracy], original_task: true}
    name: no choices
    reference: ''
  a2: !Template
    answer_choices: Yes ||| No
    id: a2
    jinja: 'Is {{ text good? ||| {{ label }}'
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [Accuracy], original_task: true}
    name: broken jinja
    reference: ''
  a3: !Template
    id: a3
    name: no jinja
  a4: !Template
    answer_choices: Yes ||| No
    id: a4
    jinja: 'Rate {{ text }}. ||| {{ answer_choices[label] }}'
    metadata: !TemplateMetadata {choices_in_prompt: false, metrics: [Accuracy], original_task: false}
    name: Rate it!
    reference: ''
  a5: !Template
    answer_choices: Yes ||| No
    id: a5
    jinja: 'Rate {{ text }} again. ||| {{ answer_choices[label] }}'
    metadata: !TemplateMetadata {choices_in_prompt: true, metrics: [Accuracy], original_task: true}
    name: rate-it
    reference: ''
"""


def test_unconvertible_templates_are_reported_not_fatal(tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(BAD_FILE)
    report = import_promptsource(path, tmp_path / "out", "choice")
    assert [(i, n) for i, n, _ in report.written] == [("a4", "Rate it!"), ("a5", "rate-it")]
    assert [p.name for _, _, p in report.written] == ["rate_it.yaml", "rate_it_2.yaml"]
    reasons = {i: r for i, _, r in report.skipped}
    assert set(reasons) == {"a1", "a2", "a3"} and report.total == 5
    assert "no answer_choices" in reasons["a1"] and "does not parse" in reasons["a2"] and "jinja" in reasons["a3"]
    turned = load_template(tmp_path / "out" / "rate_it.yaml")
    assert turned.tags.turned_around is True and turned.tags.style == "instruction"
    assert turned.options == ("Yes", "No") and turned.prompt == "Rate {{ text }}."

    with pytest.raises(HarnessError, match="rate_it.yaml: already exists; pass --overwrite"):
        import_promptsource(path, tmp_path / "out", "choice")
    assert len(import_promptsource(path, tmp_path / "out", "choice", overwrite=True).written) == 2

    generate = import_promptsource(path, tmp_path / "gen", "generate")
    assert {i for i, _, _ in generate.written} == {"a1", "a4", "a5"}  # no options needed
    assert load_template(tmp_path / "gen" / "no_choices.yaml").target == "(label) | string | trim"


def test_bad_yaml_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text("templates:\n  a: !Template [1, 2]\n")
    with pytest.raises(HarnessError, match=r"templates.yaml line 2: invalid promptsource YAML"):
        import_promptsource(path, tmp_path / "out", "choice")
    path.write_text("- just a list\n")
    with pytest.raises(HarnessError, match="not a promptsource templates.yaml"):
        import_promptsource(path, tmp_path / "out", "choice")


def test_slugs_are_unique_file_names():
    assert unique_slugs(["GPT-3 style", "gpt 3 style", "…", "…", "Yes/No?"]) == [
        "gpt_3_style", "gpt_3_style_2", "template", "template_2", "yes_no"]


@needs_promptsource
def test_cli_imports_and_reports(tmp_path, capsys):
    from harness.cli import main

    rte = SUPERGLUE / "rte" / "templates.yaml"
    code = main(["templates", "import-promptsource", str(rte), "--task", "rte_ps", "--kind", "choice",
                 "--out", str(tmp_path / "rte_ps")])
    assert code == 0
    assert "converted 10 of 10 templates" in capsys.readouterr().out
    assert len(list((tmp_path / "rte_ps").glob("*.yaml"))) == 10
    code = main(["templates", "import-promptsource", str(rte), "--task", "rte_ps", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "has no task file yet; pass --kind choice or --kind generate" in capsys.readouterr().err


# -- every shared promptsource file -----------------------------------------------------------------


@needs_promptsource
def test_every_shared_file_converts_or_reports_each_template(tmp_path):
    files = sorted(PROMPTSOURCE.rglob("templates.yaml"))
    assert len(files) == 279
    totals = Counter()
    for kind in ("choice", "generate"):
        for i, path in enumerate(files):
            report = import_promptsource(path, tmp_path / kind / str(i), kind)
            count = len(raw_file(path).get("templates") or {})
            assert report.total == count, path
            assert len(list((tmp_path / kind / str(i)).glob("*.yaml"))) == len(report.written), path
            assert all(reason and "\n" not in reason for _, _, reason in report.skipped), path
            totals[kind, "written"] += len(report.written)
            totals[kind, "total"] += report.total
    assert totals["choice", "total"] == totals["generate", "total"] == 2085
    # Every template with fixed or joined answer_choices converts for a choice task; a generate
    # task needs no choices, so everything converts.
    assert totals["generate", "written"] == 2085
    assert totals["choice", "written"] >= 1100
