"""Item 9 and item 2 of the fault findings: templates cannot exhaust the machine or crash the renderer,
and a row that lacks a field the template prints is refused instead of rendered as "None"."""

from __future__ import annotations

import time

import pytest

from harness.cli import main
from tests.test_registry import TASK, make_task


def show(tmp_path) -> int:
    return main(["tasks", "--task-dir", str(tmp_path / "tasks"), "show", "mytask", "--shots", "0"])


@pytest.mark.parametrize(("prompt", "expected"), [
    ("{% include 'other.yaml' %}", "uses {% include %}, which reads another template file"),
    ("{% import 'macros' as m %}{{ text }}", "uses {% import %}, which reads another template file"),
    ("{% extends 'base' %}", "uses {% extends %}, which reads another template file"),
    ("{{ range(10**9) | length }} {{ text }}", "range of 1000000000 items; templates may use at most 10000"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}{{ text }}", "recursion too deep"),
    ("{{ ('a' * 10**8) | length }}{{ text }}", "more than 1000000 items would be built by '*'"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ text }}",
     "range of 100000 items"),
    ("{% for i in range(10000) %}{{ 'x' * 200 }}{% endfor %}{{ text }}", "the rendered text passes 1000000 characters"),
])
def test_a_template_that_would_exhaust_the_machine_is_one_line(tmp_path, one_error_line, prompt, expected):
    make_task(tmp_path, template=f"prompt: {prompt!r}\ntags: {{options: false, style: question}}\n")
    assert show(tmp_path) == 2
    line = one_error_line()
    assert expected in line and "t1.yaml" in line


def test_a_template_looping_for_too_long_stops_within_its_time_limit(tmp_path, one_error_line):
    loops = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}{{ text }}"
    make_task(tmp_path, template=f"prompt: {loops!r}\ntags: {{options: false, style: question}}\n")
    started = time.monotonic()
    assert show(tmp_path) == 2
    assert time.monotonic() - started < 30
    assert "rendering took more than 5 s" in one_error_line()


def test_a_row_missing_a_printed_field_is_refused(tmp_path, one_error_line):
    """Rows read through `datasets` hold null where a line lacks a key; "None" must never reach a prompt."""
    make_task(tmp_path, TASK)
    (tmp_path / "tasks" / "rows.jsonl").write_text('{"text": "a", "label": 1}\n{"label": 0}\n')
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks"), "show", "mytask", "--row", "1",
                 "--shots", "0"]) == 2
    line = one_error_line()
    assert "row 1 of task 'mytask': field 'text' is missing or null in this row" in line


def test_a_guarded_null_field_still_renders(tmp_path, capsys):
    template = "prompt: \"{% if text %}{{ text }}{% else %}(none){% endif %}?\"\ntags: {options: false, style: q}\n"
    make_task(tmp_path, template=template)
    (tmp_path / "tasks" / "rows.jsonl").write_text('{"text": null, "label": 1}\n')
    assert show(tmp_path) == 0
    assert "(none)?" in capsys.readouterr().out
