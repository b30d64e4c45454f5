"""Items 10 and 14 of the fault findings: undecodable task, template, data and promptsource files, and
error text holding brackets, each end in one line; `harness tasks` takes the shared options before
`show` as well as after it."""

from __future__ import annotations

import pytest

from harness.cli import main
from tests.test_registry import make_task

NOT_UTF8 = b"name: caf\xe9\nprompt: \xff\xfe\n"


@pytest.mark.parametrize("damaged", ["tasks/mytask.yaml", "templates/mytask/t1.yaml"])
def test_a_task_or_template_file_that_is_not_utf8_is_one_line(tmp_path, one_error_line, damaged):
    make_task(tmp_path)
    (tmp_path / damaged).write_bytes(NOT_UTF8)
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks")]) == 2
    line = one_error_line()
    assert f"{damaged.split('/')[-1]}: not UTF-8 text (byte 9); save the file as UTF-8" in line


def test_a_rows_file_that_is_not_utf8_is_one_line(tmp_path, one_error_line):
    make_task(tmp_path)
    (tmp_path / "tasks" / "rows.jsonl").write_bytes(b'{"text": "caf\xe9", "label": 1}\n')
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks"), "show", "mytask"]) == 2
    line = one_error_line()
    assert "rows.jsonl: cannot read as json (" in line and line.endswith("fix the file")


def test_a_promptsource_file_that_is_not_utf8_is_one_line(tmp_path, one_error_line):
    (tmp_path / "templates.yaml").write_bytes(b"dataset: x\ntemplates:\n  a: \xff\n")
    assert main(["templates", "import-promptsource", str(tmp_path / "templates.yaml"), "--task", "rte",
                 "--out", str(tmp_path / "out")]) == 2
    assert "templates.yaml: not UTF-8 text" in one_error_line()


def test_brackets_in_an_error_are_printed_as_written(tmp_path, one_error_line):
    """rich read `[a-z0-9_-]` in this message as markup and printed `... match +`."""
    make_task(tmp_path)
    (tmp_path / "tasks" / "mytask.yaml").rename(tmp_path / "tasks" / "mt.yaml")
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks")]) == 2
    assert "must equal the file name 'mt' and match [a-z0-9_-]+" in one_error_line()


def test_a_task_name_with_markup_is_one_line(one_error_line):
    assert main(["run", "--tasks", "[/x]"]) == 2
    assert "unknown task or cluster '[/x]'" in one_error_line()


def test_shared_options_are_taken_before_show_as_after_it(tmp_path, capsys):
    make_task(tmp_path)
    (tmp_path / "data" / "mytask").mkdir(parents=True)
    (tmp_path / "data" / "mytask" / "test.jsonl").write_text('{"text": "from the data folder", "label": 0}\n')
    before = ["tasks", "--task-dir", str(tmp_path / "tasks"), "--data-dir", str(tmp_path / "data"), "show",
              "mytask", "--shots", "0"]
    after = ["tasks", "show", "mytask", "--shots", "0", "--task-dir", str(tmp_path / "tasks"), "--data-dir",
             str(tmp_path / "data")]
    outputs = []
    for args in (before, after):
        assert main(args) == 0, capsys.readouterr().err
        outputs.append(capsys.readouterr().out)
    assert "Is from the data folder true?" in outputs[0]
    assert outputs[0] == outputs[1]
