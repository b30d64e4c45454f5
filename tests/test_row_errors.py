"""Errors about rows name the file and key where the fix belongs.

A field the rows lack is the rows' fault (map it under the task file's `layouts:`), unless a
template's name for it is close to a column (a typo in the template); a field the task file's own
`answer`, `options` or `target` reads is that key's fault; an answer that is neither an index nor an
option is the task file's `answer`. Each is one line, through the CLI as through the API.
"""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.tasks.prompts import PromptRenderer
from harness.tasks.registry import load_task
from tests.test_registry import TASK, make_task

GENERATE_TASK = """\
name: mytask
cluster: mine
kind: generate
data:
  files: {test: rows.jsonl}
  eval_split: test
target: anwser
metrics: [exact_match]
templates: mytask
"""


def show(tmp_path, capsys, rows) -> str:
    """`harness tasks show` on the task in tmp_path with these rows: its one error line."""
    (tmp_path / "tasks" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks"), "show", "mytask", "--shots", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err.removeprefix("error: ")


def test_a_field_the_rows_lack_is_mapped_under_layouts_not_fixed_in_the_template(tmp_path, capsys):
    """SuperGLUE's release WSC rows nest the spans under `target`: the rows lack span1_text."""
    template = 'prompt: "{{ text }} Does it refer to {{ span1_text }}?"\ntags: {options: false, style: question}\n'
    path = make_task(tmp_path, template=template)
    line = show(tmp_path, capsys, [{"text": "a", "target": {"span1_text": "b"}, "idx": 0, "label": 1}])
    assert line.startswith(f"{path}: template t1.yaml uses field 'span1_text', missing from the rows of local files")
    assert "(columns: text, target, idx, label); the rows lack it: map it from their columns under 'layouts:' " \
           "in this task file, or point the task at rows that have it" in line
    assert "fix the template" not in line


def test_a_template_name_close_to_a_column_is_called_a_typo(tmp_path, capsys):
    template = 'prompt: "Is {{ txet }} true?"\ntags: {options: false, style: question}\n'
    make_task(tmp_path, template=template)
    line = show(tmp_path, capsys, [{"text": "a", "label": 1}])
    assert "t1.yaml: uses field 'txet', missing from the rows" in line
    assert "did you mean 'text'? fix the name in the template's 'prompt'" in line


def test_an_answer_that_is_neither_index_nor_option_names_the_task_files_answer(tmp_path, capsys):
    """WiC's release labels are "true"/"false": `answer: label` then gives a string that is no option."""
    path = make_task(tmp_path)
    line = show(tmp_path, capsys, [{"text": "a", "label": "false"}])
    assert line.startswith(f"{path}: row 0 of task 'mytask': answer 'false' (field 'answer': 'label') is neither an "
                           "option index nor one of the options ['no', 'yes']; fix 'answer' in the task file, or map "
                           "the rows' labels under 'layouts:' there")
    assert "t1.yaml" not in line


@pytest.mark.parametrize(("answer", "label", "expected"), [
    ("label", True, "answer expression 'label' gave True, not an index"),
    ("label", 2, "answer index 2 is outside the 2 options (field 'answer': 'label')"),
    ("\"['n', 'y'].index(label)\"", "m", "field 'answer' (\"['n', 'y'].index(label)\") failed on this row (ValueError"),
    ("label.value", 1, "field 'answer' ('label.value'): 'int object' has no attribute 'value'"),
])
def test_every_answer_failure_names_the_task_file(tmp_path, answer, label, expected):
    task = load_task(make_task(tmp_path, TASK.replace("answer: label", f"answer: {answer}")))
    with pytest.raises(HarnessError) as caught:
        PromptRenderer().render_row(task, task.templates[0], {"text": "a", "label": label}, "3")
    message = str(caught.value)
    assert message.startswith(f"{task.path}: row 3 of task 'mytask': ") and expected in message
    assert "fix 'answer' in the task file" in message


def test_a_misspelled_target_is_the_task_files_target(tmp_path, capsys):
    path = make_task(tmp_path, GENERATE_TASK)
    line = show(tmp_path, capsys, [{"text": "a", "answer": "b"}])
    assert line.startswith(f"{path}: field 'target' reads 'anwser', missing from the rows of local files")
    assert "(columns: text, answer); did you mean 'answer'? fix 'target' in the task file" in line
    assert "t1.yaml" not in line


def test_a_templates_own_target_is_the_templates(tmp_path):
    template = 'prompt: "Say {{ text }}"\ntarget: anwser\ntags: {options: false, style: question}\n'
    task = load_task(make_task(tmp_path, GENERATE_TASK.replace("target: anwser", "target: answer"), template))
    with pytest.raises(HarnessError) as caught:
        PromptRenderer().check_fields(task, ["text", "answer"], "local files")
    assert str(caught.value).startswith(f"{task.templates[0].path}: uses field 'anwser', missing from the rows")
    assert "fix the name in the template's 'target'" in str(caught.value)


def test_task_options_reading_a_missing_field_name_the_task_files_options(tmp_path):
    options = 'options: ["{{ choice1 }}", "{{ choise2 }}"]'
    task = load_task(make_task(tmp_path, TASK.replace('options: ["no", "yes"]', options)))
    with pytest.raises(HarnessError) as caught:
        PromptRenderer().check_fields(task, ["text", "choice1", "choice2", "label"], "local files")
    assert str(caught.value).startswith(f"{task.path}: field 'options' reads 'choise2', missing from the rows")
    assert "did you mean 'choice2'? fix 'options' in the task file" in str(caught.value)


def test_a_null_printed_field_is_the_rows_fault(tmp_path):
    task = load_task(make_task(tmp_path))
    with pytest.raises(HarnessError) as caught:
        PromptRenderer().render_row(task, task.templates[0], {"text": None, "label": 1}, "5")
    message = str(caught.value)
    assert message.startswith(f"{task.path}: row 5 of task 'mytask': field 'text' is missing or null in this row, "
                              "and template t1.yaml prints it; fix the rows (or map the field from their columns "
                              "under 'layouts:' in the task file)")
