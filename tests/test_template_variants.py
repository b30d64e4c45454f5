"""`harness templates vary`: generated format variants are ordinary, hashed template files that keep
their source's content, options and answers, are seeded byte for byte, and run through `--task-dir`."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import HarnessError
from harness.tasks.format_grammar import SLOTS_KEY, parse_format, render_format
from harness.tasks.prompts import PromptRenderer
from harness.tasks.registry import Registry
from harness.tasks.rows import DataOverrides, load_split
from tests.conftest import SHARED_DATA

SUPERGLUE = SHARED_DATA / "superglue"
needs_superglue = pytest.mark.skipif(
    not all((SUPERGLUE / t / "val.jsonl").is_file() for t in ("copa", "rte", "cb")),
    reason=f"shared SuperGLUE rows not found at {SUPERGLUE} (copa/rte/cb val.jsonl)",
)
ANSWER_CUES = {"answer", "reply", "response", "output"}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def vary(capsys, *args: str) -> tuple[int, str]:
    code = main(["templates", "vary", *args])
    return code, capsys.readouterr().out


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.yaml"))}


def content_words(text: str) -> list[str]:
    """The words of a prompt with its form taken out: case, punctuation, one-character enumerator
    labels and answer cues. A variant must keep exactly its source's words, in order."""
    return [w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) > 1 and w not in ANSWER_CUES]


def test_the_grammar_gives_back_every_builtin_template_as_written():
    seen, varied = set(), 0
    for task in Registry().tasks.values():
        for template in task.templates:
            if template.path in seen:
                continue
            seen.add(template.path)
            structure = parse_format(str(template.path), template.prompt)
            assert render_format(structure, structure.choices(0)) == template.prompt, template.path
            varied += bool(structure.axes)
    assert len(seen) > 150 and varied > 100


def test_field_lines_options_and_answer_cue_are_recognised():
    source = ("Read this.\n\nPremise: {{ premise }}\nHypothesis: {{ hypothesis }}\nOPTIONS:\n"
              "{% for o in options %}- {{ o }}\n{% endfor %}Answer:")
    structure = parse_format("t", source)
    assert list(structure.axes) == ["separator", "casing", "field_join", "enumerator", "answer_prefix"]
    form = {"separator": ":\n", "casing": "upper", "field_join": " || ", "enumerator": "(a)",
            "answer_prefix": "Output:"}
    assert render_format(structure, form) == (
        "Read this.\n\nPREMISE:\n{{ premise }} || HYPOTHESIS:\n{{ hypothesis }}\nOPTIONS:\n"
        '{% for o in options %}({{ "abcdefghijklmnopqrstuvwxyz"[loop.index0] }}) {{ o }}\n{% endfor %}Output:')
    # Labelled options keep their labels (often the scored options) and change only punctuation.
    numbered = parse_format("t", "Q: {{ q }}\n1. {{ a }}\n2. {{ b }}\nAnswer with 1 or 2.\nA:")
    assert numbered.axes["enumerator"][0] == "X." and "none" not in numbered.axes["enumerator"]
    assert render_format(numbered, {"enumerator": "(X)", "answer_prefix": "Response:"}) == (
        "Q: {{ q }}\n(1) {{ a }}\n(2) {{ b }}\nAnswer with 1 or 2.\nResponse:")
    # Newlines and "}}" inside a tag's strings are not line ends; a tag left open parses to no axis.
    quoted = '{{ "}}\n" }}\nPremise: {{ p }}\nHypothesis: {{ h }}'
    joined = render_format(parse_format("t", quoted), {"field_join": " "})
    assert joined == '{{ "}}\n" }}\nPremise: {{ p }} Hypothesis: {{ h }}'
    assert parse_format("t", "Premise: {{ p }}\nHypothesis: {{ h").axes == {}
    # Statements, set blocks and whitespace control are never touched.
    for opaque in ("{% set x %}Premise: {{ p }}\nHypothesis: {{ h }}{% endset %}{{ x }}",
                   "Premise: {{ p -}}\nHypothesis: {{ h }}", "{% raw %}Premise: {{ p }}{% endraw %}"):
        assert "field_join" not in parse_format("t", opaque).axes, opaque


def test_instruction_slots_are_marked_in_tags_and_checked():
    source = "Say whether the number is even.\nNumber: {{ n }}"
    slots = [{"text": "Say whether the number is even.", "alternatives": ["Is the number even?", "Even or not?"]}]
    structure = parse_format("t", source, slots)
    assert structure.axes["instruction_1"] == (0, 1, 2)
    assert render_format(structure, {"instruction_1": 2}) == "Even or not?\nNumber: {{ n }}"
    for bad in ([{"text": "Number", "alternatives": ["N"]}], [{"text": "nowhere", "alternatives": ["x"]}],
                [{"text": "Say whether"}], "Say"):
        with pytest.raises(HarnessError, match=SLOTS_KEY):
            parse_format("t.yaml", source, bad)


def test_same_seed_same_bytes_other_seed_other_set(tmp_path, capsys):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        code, out = vary(capsys, "copa", "--n", "12", "--seed", seed, "--out", str(tmp_path / name))
        assert code == 0
        assert len([line for line in out.splitlines() if line.startswith("wrote ")]) == 12
    first, second, other = (files_of(tmp_path / name) for name in "abc")
    assert first == second and len(first) == 13  # 12 variants and the task file
    prompts = {name: {yaml.safe_load(b)["prompt"] for path, b in files_of(tmp_path / name).items()
                      if path.startswith("templates")} for name in "ac"}
    assert prompts["a"] != prompts["c"]
    assert (tmp_path / "a" / "tasks" / "copa.yaml").read_bytes() == Registry().get("copa").path.read_bytes()


def check_variants(task_name: str, out: Path, overrides: DataOverrides | None, rows: int = 8,
                   builtin: Registry | None = None) -> int:
    """Every variant, loaded by the normal registry, renders each row with its source's options,
    answer, field values and words; its tags re-create it from its source."""
    source_task = (builtin or Registry()).get(task_name)
    task = Registry([out / "tasks"]).get(task_name)
    assert task.data == source_task.data and all(t.tags.extra["generated"] is True for t in task.templates)
    split = load_split(task, task.data.eval_split, rows, overrides)
    renderer = PromptRenderer()
    for variant in task.templates:
        form = dict(variant.tags.extra["format"])
        source = source_task.template(form.pop("source"))
        assert form.pop("source_hash") == source.hash and variant.hash != source.hash
        structure = parse_format(str(source.path), source.prompt, source.tags.extra.get(SLOTS_KEY))
        if "instructions" in form:
            form.update((f"instruction_{n}", pick) for n, pick in enumerate(form.pop("instructions"), start=1))
        assert set(form) == set(structure.axes), "tags name exactly the axes that applied"
        assert render_format(structure, form) == variant.prompt
        assert (variant.options, variant.target, variant.tags.style) == (source.options, source.target,
                                                                        source.tags.style)
        # The words to keep are the source's, in the instruction wording the variant chose.
        worded = replace(source, prompt=render_format(
            structure, {k: v for k, v in form.items() if k.startswith("instruction_")}))
        for row, row_id in zip(split.rows, split.ids, strict=True):
            original = renderer.render_row(task, source, row, row_id)
            words = content_words(renderer.render_row(task, worded, row, row_id).prompt)
            varied = renderer.render_row(task, variant, row, row_id)
            assert (varied.options, varied.answer_index, varied.references) == (
                original.options, original.answer_index, original.references)
            for value in row.values():
                text = str(value)
                if len(text) > 1:
                    assert (text in original.prompt) == (text in varied.prompt), (variant.id, text)
            assert content_words(varied.prompt) == words, variant.id
    return len(task.templates)


@needs_superglue
@pytest.mark.parametrize("task_name", ["copa", "rte", "cb"])
def test_superglue_variants_keep_content_on_real_rows(task_name, tmp_path, capsys):
    code, _ = vary(capsys, task_name, "--n", "30", "--seed", "7", "--out", str(tmp_path))
    assert code == 0
    assert check_variants(task_name, tmp_path, DataOverrides(roots=(str(SUPERGLUE),))) == 30


@pytest.mark.parametrize("task_name", ["parity", "list_max", "add_numbers"])
def test_generated_task_variants_keep_content(task_name, tmp_path, capsys):
    code, _ = vary(capsys, task_name, "--n", "25", "--seed", "1", "--out", str(tmp_path))
    assert code == 0
    assert check_variants(task_name, tmp_path, None) == 25


def test_n_spreads_over_templates_and_overwrite_replaces_the_set(tmp_path, capsys):
    code, out = vary(capsys, "rte", "--n", "13", "--out", str(tmp_path))
    assert code == 0 and "--task-dir " + str(tmp_path / "tasks") in out
    varies = {t.id: bool(parse_format(str(t.path), t.prompt).axes) for t in Registry().get("rte").templates}
    assert "q_conclude" in varies and not varies["q_conclude"] and "not varied q_conclude:" in out
    names = sorted(p.stem for p in (tmp_path / "templates" / "rte").glob("*.yaml"))
    per_source = {}
    for name in names:
        source, _, number = name.partition("__v")
        per_source.setdefault(source, []).append(number)
    assert len(names) == 13 and set(per_source) <= {k for k, v in varies.items() if v}
    assert len(per_source) == min(13, sum(varies.values()))
    assert max(map(len, per_source.values())) - min(map(len, per_source.values())) <= 1, "spread round robin"
    assert all(numbers == [f"{i:02d}" for i in range(len(numbers))] for numbers in per_source.values())

    assert main(["templates", "vary", "rte", "--n", "13", "--out", str(tmp_path)]) == 2
    assert "already exists; pass --overwrite" in error_line(capsys)
    code, _ = vary(capsys, "rte", "--n", "3", "--seed", "5", "--out", str(tmp_path), "--overwrite")
    assert code == 0 and len(list((tmp_path / "templates" / "rte").glob("*.yaml"))) == 3


def test_fewer_forms_than_asked_relative_rows_and_slots(tmp_path, capsys):
    """A task of one's own: the grammar's space is small, its row file is a relative path, and its
    template marks an instruction slot."""
    (tmp_path / "mine" / "tasks").mkdir(parents=True)
    (tmp_path / "mine" / "templates" / "mini").mkdir(parents=True)
    (tmp_path / "mine" / "rows.jsonl").write_text('{"number": 12, "label": 0}\n{"number": 7, "label": 1}\n')
    (tmp_path / "mine" / "tasks" / "mini.yaml").write_text(
        "name: mini\ncluster: arithmetic\nkind: choice\ndata: {files: {test: ../rows.jsonl}, eval_split: test}\n"
        'options: ["even", "odd"]\nanswer: label\nmetrics: [acc]\ntemplates: mini\n')
    (tmp_path / "mine" / "templates" / "mini" / "one.yaml").write_text(yaml.safe_dump({
        "prompt": "Say whether the number is even or odd.\n{{ number }}\nAnswer:",
        "tags": {"options": False, "style": "question", "extra": {SLOTS_KEY: [
            {"text": "Say whether the number is even or odd.", "alternatives": ["Is the number even or odd?"]}]}},
    }))
    out = tmp_path / "variants"
    code, printed = vary(capsys, "mini", "--n", "50", "--task-dir", str(tmp_path / "mine" / "tasks"),
                         "--out", str(out))
    assert code == 0 and "9 variants (of 50 asked for" in printed  # 5 answer cues x 2 wordings, less the source
    task = Registry([out / "tasks"]).get("mini")
    assert task.data.files["test"] == str((tmp_path / "mine" / "rows.jsonl").resolve())
    recorded = {(t.tags.extra["format"]["answer_prefix"], t.tags.extra["format"]["instructions"][0])
                for t in task.templates}
    assert len(recorded) == 9 and ("Answer:", 0) not in recorded
    assert all(SLOTS_KEY not in t.tags.extra for t in task.templates)
    reworded = [t for t in task.templates if t.tags.extra["format"]["instructions"] == [1]]
    assert len(reworded) == 5 and all(t.prompt.startswith("Is the number even or odd?\n") for t in reworded)
    assert check_variants("mini", out, None, builtin=Registry([tmp_path / "mine" / "tasks"])) == 9


def test_one_line_errors(tmp_path, capsys):
    assert main(["templates", "vary", "no_such_task", "--out", str(tmp_path)]) == 2
    assert "unknown task 'no_such_task'" in error_line(capsys)
    assert main(["templates", "vary", "copa", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "--n 0" in error_line(capsys)
    assert main(["templates", "vary", "ifeval", "--out", str(tmp_path)]) == 2
    assert "templates has a form the grammar can vary" in error_line(capsys)
    handwritten = tmp_path / "templates" / "copa"
    handwritten.mkdir(parents=True)
    (handwritten / "mine.yaml").write_text("prompt: x\ntags: {options: false, style: q}\n")
    assert main(["templates", "vary", "copa", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "not generated by `harness templates vary`" in error_line(capsys)
    assert list(tmp_path.rglob("*.yaml")) == [handwritten / "mine.yaml"]


def test_a_run_evaluates_the_variants_through_task_dir(tmp_path, capsys):
    assert vary(capsys, "parity", "--n", "5", "--seed", "2", "--out", str(tmp_path / "v"))[0] == 0
    code = main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "parity", "--task-dir",
                 str(tmp_path / "v" / "tasks"), "--limit", "2", "--out", str(tmp_path / "runs"), "--run-id", "r"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    ran = {t["id"] for t in record["tasks"][0]["templates"]}
    written = {p.stem for p in (tmp_path / "v" / "templates" / "parity").glob("*.yaml")}
    assert ran == written and len(ran) == 5 and all("__v" in name for name in ran)


def test_with_sources_copies_the_hand_written_templates_beside_the_variants(tmp_path, capsys):
    out = tmp_path / "v"
    code, printed = vary(capsys, "parity", "--n", "4", "--seed", "2", "--out", str(out), "--with-sources")
    builtin = {t.id: t for t in Registry().get("parity").templates}
    assert code == 0 and f"with copies of its {len(builtin)} own templates" in " ".join(printed.split())
    folder = out / "templates" / "parity"
    assert all((folder / t.path.name).read_bytes() == t.path.read_bytes() for t in builtin.values())
    varied = Registry([out / "tasks"]).get("parity").templates
    assert len(varied) == len(builtin) + 4
    assert {t.hash for t in varied if t.id in builtin} == {t.hash for t in builtin.values()}, "same hashes"
    # The copies are the command's own files: rewriting the set is allowed, and without --with-sources
    # they go with the rest of the earlier set.
    assert vary(capsys, "parity", "--n", "4", "--seed", "2", "--out", str(out), "--with-sources",
                "--overwrite")[0] == 0
    assert vary(capsys, "parity", "--n", "4", "--seed", "2", "--out", str(out), "--overwrite")[0] == 0
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(
        p.name for p in folder.glob("*__v*.yaml")) and len(list(folder.glob("*.yaml"))) == 4
    edited = folder / "copy_of_mine.yaml"
    edited.write_text(next(iter(builtin.values())).path.read_text() + "\n# mine\n")
    assert main(["templates", "vary", "parity", "--n", "4", "--out", str(out), "--overwrite"]) == 2
    assert "a template not generated by `harness templates vary` is in the folder" in error_line(capsys)
