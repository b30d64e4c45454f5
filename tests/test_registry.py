"""Task files load strictly: every mistake is one line that names the file and the field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.tasks.registry import Registry, load_task, load_template

TASK = """\
name: mytask
cluster: mine
kind: choice
data:
  files: {test: rows.jsonl}
  eval_split: test
options: ["no", "yes"]
answer: label
metrics: [acc]
templates: mytask
"""
TEMPLATE = """\
prompt: "Is {{ text }} true?"
tags: {options: false, style: question}
"""


def make_task(root: Path, task: str = TASK, template: str = TEMPLATE) -> Path:
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "mytask").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "mytask.yaml").write_text(task)
    (root / "templates" / "mytask" / "t1.yaml").write_text(template)
    (root / "tasks" / "rows.jsonl").write_text('{"text": "a", "label": 1}\n')
    return root / "tasks" / "mytask.yaml"


def test_builtin_suite_loads_six_clusters():
    registry = Registry()
    clusters = registry.clusters()
    assert len(clusters) >= 6
    assert all(len(task.templates) >= 6 for task in registry.select("builtin"))
    assert {t.name for t in registry.select("arithmetic")} == {"add_numbers", "parity"}
    assert [t.name for t in registry.select("parity,comparison")] == ["parity", "compare_length", "compare_numbers"]


def test_user_task_loads_with_hashes(tmp_path):
    task = load_task(make_task(tmp_path))
    assert task.kind == "choice" and task.options == ("no", "yes")
    assert [t.id for t in task.templates] == ["t1"]
    assert len(task.hash) == 16 and len(task.templates[0].hash) == 16
    assert task.data.files["test"] == str((tmp_path / "tasks" / "rows.jsonl").resolve())


def test_template_hash_tracks_rendering_not_tags(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(TEMPLATE)
    first = load_template(path).hash
    path.write_text(TEMPLATE.replace("style: question", "style: instruction"))
    assert load_template(path).hash == first
    path.write_text(TEMPLATE.replace("true?", "true ?"))
    assert load_template(path).hash != first


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t + "colour: red\n", r"mytask.yaml: unknown task field 'colour'"),
    (lambda t: t.replace("cluster: mine\n", ""), r"mytask.yaml: missing required task field 'cluster'"),
    (lambda t: t.replace("kind: choice", "kind: pick"), r"field 'kind' must be 'choice' or 'generate', got 'pick'"),
    (lambda t: t.replace("metrics: [acc]", "metrics: [bleu]"), r"metric 'bleu' is not available for choice"),
    (lambda t: t.replace("answer: label\n", ""), r"choice tasks need field 'answer'"),
    (lambda t: t.replace("answer: label", "answer: label +"), r"field 'answer' has a Jinja syntax error"),
    (lambda t: t.replace("templates: mytask", "templates: nowhere"), r"names folder 'nowhere', not found"),
    (lambda t: t.replace("name: mytask", "name: other"), r"field 'name' must equal the file name 'mytask'"),
    (lambda t: t.replace("  eval_split: test\n", ""), r"missing required data field 'eval_split'"),
    (lambda t: t.replace("options: [\"no\", \"yes\"]", "options: 3"), r"field 'options' must be a non-empty list"),
    (lambda t: t + "metadata: [1\n", r"mytask.yaml line \d+: invalid YAML"),
    (lambda t: t.replace("kind: choice", "kind: generate").replace("options: [\"no\", \"yes\"]\nanswer: label",
                                                                   "target: label\ngeneration: {max_new_tokens: 0}")
     .replace("[acc]", "[exact_match]"), r"mytask.yaml: generation.max_new_tokens is 0; give at least 1"),
    (lambda t: t.replace("  eval_split: test\n", "  eval_split: test\n  fewshot_sampler: last\n"),
     r"mytask.yaml: field 'data.fewshot_sampler' is 'last'; use one of random, first_n"),
])
def test_malformed_task_files_name_file_and_field(tmp_path, change, message):
    path = make_task(tmp_path, change(TASK))
    with pytest.raises(HarnessError, match=message):
        load_task(path)


@pytest.mark.parametrize(("template", "message"), [
    ("prompt: '{{ text '\ntags: {options: false, style: q}\n", r"t1.yaml: field 'prompt' has a Jinja syntax error"),
    ("prompt: hi\n", r"t1.yaml: missing required template field 'tags'"),
    ("prompt: hi\ntags: {options: maybe, style: q}\n", r"field 'tags.options' must be true or false"),
    ("prompt: hi\ntags: {options: false, style: q, colour: 1}\n", r"unknown tags field 'colour'"),
])
def test_malformed_templates_name_file_and_field(tmp_path, template, message):
    path = make_task(tmp_path, template=template)
    with pytest.raises(HarnessError, match=message):
        load_task(path)


def test_unknown_task_or_cluster_says_what_to_do():
    with pytest.raises(HarnessError, match=r"unknown task or cluster 'nope'; run `harness tasks`"):
        Registry().select("nope")


def test_user_folder_adds_tasks_next_to_builtin(tmp_path):
    make_task(tmp_path)
    registry = Registry([tmp_path / "tasks"])
    assert "mytask" in registry.tasks and "parity" in registry.tasks
    assert registry.clusters()["mine"][0].name == "mytask"


def test_error_messages_are_one_line(tmp_path):
    path = make_task(tmp_path, textwrap.dedent(TASK).replace("kind: choice", "kind: [x, y]"))
    with pytest.raises(HarnessError) as caught:
        load_task(path)
    assert "\n" not in str(caught.value)


def test_related_clusters_are_symmetric_and_transitive(tmp_path):
    make_task(tmp_path, TASK.replace("cluster: mine", "cluster: nli\nrelated_clusters: [paraphrase]"))
    registry = Registry([tmp_path / "tasks"])
    assert registry.related_clusters("nli") == {"nli", "paraphrase"}
    assert registry.related_clusters("paraphrase") == {"nli", "paraphrase"}
    assert registry.related_clusters("arithmetic") == {"arithmetic"}


def test_user_task_shadows_a_builtin_of_the_same_name(tmp_path):
    make_task(tmp_path, TASK.replace("name: mytask", "name: parity"))
    (tmp_path / "tasks" / "mytask.yaml").rename(tmp_path / "tasks" / "parity.yaml")
    registry = Registry([tmp_path / "tasks"])
    assert registry.get("parity").path == (tmp_path / "tasks" / "parity.yaml").resolve()
    assert registry.get("parity").cluster == "mine"


def test_builtin_selects_only_the_offline_suite():
    registry = Registry()
    builtin = registry.select("builtin")
    assert builtin and all(task.data.generator for task in builtin)
    assert {t.name for t in registry.select("all")} > {t.name for t in builtin}


def test_limit_by_keeps_the_first_n_rows_of_each_member_task(tmp_path):
    """A task family (NIv2) declares `data.limit_by`: --limit N is N rows of each member, in row order."""
    from harness.tasks.rows import load_split

    family = TASK.replace("  eval_split: test\n", "  eval_split: test\n  limit_by: member\n")
    task = load_task(make_task(tmp_path, family))
    members = ["a", "b", "a", "c", "a", "b", "c", "c"]
    (tmp_path / "tasks" / "rows.jsonl").write_text(
        "".join(json.dumps({"text": f"{m}{i}", "label": 1, "member": m}) + "\n" for i, m in enumerate(members)))
    assert [r["text"] for r in load_split(task, "test", limit=2).rows] == ["a0", "b1", "a2", "c3", "b5", "c6"]
    assert len(load_split(task, "test").rows) == 8
    (tmp_path / "tasks" / "rows.jsonl").write_text('{"text": "x", "label": 1}\n')
    with pytest.raises(HarnessError, match=r"mytask.yaml: row 0 has no field 'member', which 'data.limit_by' names"):
        load_split(task, "test", limit=2)
