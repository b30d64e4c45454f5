"""Random task files, templates and rows: every case ends in a finished run or exit 2 with one line.

Each case writes a task, a template and a rows file drawn from pieces that are valid, nearly valid
and plainly wrong (kinds, metrics, options, answers, Jinja, tags, row values, undecodable bytes),
then runs the whole command with the scripted backend (no model, so hundreds of cases fit in CI).
A traceback, an exit status other than 0 or 2, an error of more than one line or a case slower
than its deadline fails the test, and hypothesis shrinks it to the smallest such files.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main

CASES = 300

WRONG_KINDS = st.sampled_from(["rank", "", "Choice", "3"])
WRONG_METRICS = st.lists(st.sampled_from(["acc", "acc_norm", "exact_match", "f1", "rouge_l", "bleu", ""]),
                         min_size=0, max_size=3)
VALID = {
    "choice": {"metrics": ["acc", "acc_norm"], "options": ["no", "yes"], "answer": "label"},
    "generate": {"metrics": ["exact_match", "f1"], "target": "text"},
}
WRONG_OPTIONS = st.sampled_from([["{{ text }}", "not {{ text }}"], "choices", [], ["only"], "[{{", 7, ["a", 3]])
WRONG_ANSWERS = st.sampled_from(["label + 1", "'yes'", "text", "missing", "{{", "label | int", "5"])
WRONG_TARGETS = st.sampled_from(["[text, 'x']", "label", "missing", "text ~ '!'", "(("])
PIECES = st.sampled_from([
    "{{ text }}", "Answer:", "\n", "{{ text | upper }}", "{% if text %}{{ text }}{% endif %}",
    "{{ options | join(', ') }}", "{{ range(3) | list }}", "{% for i in range(50) %}{{ i }}{% endfor %}",
    "é ü 中", "{{ missing }}", "{{", "{% endfor %}", "{% include 'x' %}", "{{ text.__class__ }}",
    "{{ label * 3 }}", "{{ 'ab' * 999999 }}", "{{ range(10**6) | length }}", "{{ choices[0] }}",
])
WRONG_TAGS = st.sampled_from(["{}", "{options: maybe, style: q}", "[1, 2]", "{options: false, style: q, extra_key: 1}"])
TEXTS = st.one_of(st.text(max_size=20), st.none(), st.integers(-5, 5), st.just(["a", "b"]))
LABELS = st.one_of(st.integers(0, 1), st.integers(-1, 3), st.sampled_from(["yes", "no", "true", ""]), st.none())
ROW = st.fixed_dictionaries({"text": st.text(max_size=20), "label": st.integers(0, 1)},
                            optional={"choices": st.just(["p", "q"])})
ODD_ROW = st.fixed_dictionaries({}, optional={"text": TEXTS, "label": LABELS})
RAW_LINES = st.sampled_from(["not json", "[1, 2]", "{}", ""])


@st.composite
def cases(draw) -> dict:
    """A valid task, template and rows, each part replaced by a wrong one one time in five."""

    def wrong() -> bool:
        return draw(st.integers(0, 4)) == 4

    kind = draw(st.sampled_from(["choice", "generate"]))
    task = {"name": "fz", "cluster": "fuzz", "kind": draw(WRONG_KINDS) if wrong() else kind,
            "data": {"files": {"test": "rows.jsonl", "train": "rows.jsonl"}, "eval_split": "test",
                     "fewshot_split": draw(st.sampled_from(["test", "nope"])) if wrong() else "train"},
            "templates": "fz", **VALID[kind]}
    if wrong():
        task["metrics"] = draw(WRONG_METRICS)
    if wrong():
        task["options"] = draw(WRONG_OPTIONS)
    if wrong():
        task["answer" if kind == "choice" else "target"] = draw(WRONG_ANSWERS if kind == "choice" else WRONG_TARGETS)
    if wrong():
        task["generation"] = {"max_new_tokens": draw(st.sampled_from([1, 4, 0, -3, "many"])),
                              "stop": draw(st.sampled_from([["\n"], "\n", [], [3]]))}
    prompt = "".join(draw(st.lists(PIECES, min_size=1, max_size=4)))
    rows = draw(st.lists(ODD_ROW if wrong() else ROW, min_size=0 if wrong() else 3, max_size=6))
    lines = [json.dumps(r) for r in rows] + (draw(st.lists(RAW_LINES, max_size=1)) if wrong() else [])
    tags = draw(WRONG_TAGS) if wrong() else "{options: false, style: question}"
    return {
        "task": "name: [unclosed" if draw(st.integers(0, 19)) == 19 else json.dumps(task),
        "template": f"prompt: {json.dumps(prompt)}\ntags: {tags}\n",
        "rows": b"\xff\xfe\x00bad" if draw(st.integers(0, 19)) == 19 else ("\n".join(lines) + "\n").encode(),
        "shots": draw(st.sampled_from(["0", "1", "0,2"])),
    }


def run_case(case: dict) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "tasks").mkdir()
        (root / "templates" / "fz").mkdir(parents=True)
        (root / "tasks" / "fz.yaml").write_text(case["task"], encoding="utf-8")
        (root / "templates" / "fz" / "t1.yaml").write_text(case["template"], encoding="utf-8")
        (root / "tasks" / "rows.jsonl").write_bytes(case["rows"])
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["run", "--backend", "scripted", "--model", "fuzz", "--task-dir", str(root / "tasks"),
                         "--tasks", "fz", "--shots", case["shots"], "--limit", "4", "--out", str(root / "out"),
                         "--run-id", "r"])
        if code == 0:
            assert (root / "out" / "r" / "run.json").is_file(), "exit 0 without a complete run record"
        return code, err.getvalue()


@settings(max_examples=CASES, deadline=20_000, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
          database=None)
@given(cases())
def test_random_task_files_end_in_a_run_or_one_clear_line(case):
    code, err = run_case(case)
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("error:"), err
