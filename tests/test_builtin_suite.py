"""Tests for the built-in procedural suite: generators, task files and templates.

The suite is what the rest of the test-suite runs on offline, so its rows must be reproducible and
correct, and every shipped template must render on real rows. This file deliberately depends only
on `harness.builtin.suite`, jinja2 and yaml, not on the task loader, so it checks the files as data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from harness.benchmarks.suite import GENERATORS, generate_rows

ROOT = Path(__file__).resolve().parents[1]
TASK_DIR = ROOT / "tasks"
TEMPLATE_DIR = ROOT / "templates"
TASK_KEYS = set(
    "name cluster description kind data options answer target generation metrics templates "
    "target_delimiter fewshot_delimiter metadata".split()
)
TEMPLATE_KEYS = {"prompt", "tags", "options", "target_delimiter"}
ENV = SandboxedEnvironment(undefined=StrictUndefined)


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# Only the procedural suite: other task files read real data from the hub or a local folder.
TASKS: dict[str, dict[str, Any]] = {
    p.stem: task for p in sorted(TASK_DIR.glob("*.yaml")) if "generator" in (task := _load(p))["data"]
}


def _rows(name: str, split: str = "test", n: int = 200) -> list[dict[str, Any]]:
    return generate_rows(name, 1234, split, n)


# ------------------------------------------------------------------------------------ generators
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_is_deterministic_and_split_dependent(name: str) -> None:
    rows = generate_rows(name, 7, "test", 50)
    assert rows == generate_rows(name, 7, "test", 50)
    assert rows != generate_rows(name, 7, "train", 50)
    assert rows != generate_rows(name, 8, "test", 50)
    assert [r["idx"] for r in rows] == list(range(50))
    json.dumps(rows)  # plain JSON-serialisable values only


def test_generate_rows_prefix_stable_and_empty() -> None:
    assert generate_rows("parity", 1, "test", 10) == generate_rows("parity", 1, "test", 20)[:10]
    assert generate_rows("parity", 1, "test", 0) == []


def test_unknown_generator_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown built-in generator 'nope'.*parity"):
        generate_rows("nope", 1, "test", 3)


def test_golden_first_rows() -> None:
    assert _rows("add_numbers")[0] == {"a": 9, "b": 12, "answer": "21", "idx": 0}
    assert _rows("parity")[0] == {"number": 129, "label": 1, "idx": 0}
    assert _rows("reverse_word")[0] == {"word": "flame", "answer": "emalf", "idx": 0}
    assert _rows("compare_numbers")[0] == {"first": 603, "second": 581, "label": 0, "idx": 0}


def test_string_transform_answers() -> None:
    for row in _rows("reverse_word"):
        assert row["answer"] == row["word"][::-1] != row["word"]
    for row in _rows("uppercase_word"):
        assert row["answer"] == row["word"].upper()
    words = [r["word"] for r in _rows("reverse_word", n=100)]
    assert len(set(words)) == 100  # pool is exhausted before any word repeats


def test_arithmetic_answers() -> None:
    for row in _rows("add_numbers"):
        assert 0 <= row["a"] <= 99 and 0 <= row["b"] <= 99
        assert row["answer"] == str(row["a"] + row["b"])
    labels = [row["label"] for row in _rows("parity")]
    assert labels == [row["number"] % 2 for row in _rows("parity")]
    assert set(labels) == {0, 1}


def test_comparison_labels() -> None:
    for row in _rows("compare_numbers"):
        assert row["first"] != row["second"]
        assert row["label"] == (0 if row["first"] > row["second"] else 1)
    for row in _rows("compare_length"):
        assert len(row["first"]) != len(row["second"])
        assert row["label"] == (0 if len(row["first"]) > len(row["second"]) else 1)


def test_lexicon_labels() -> None:
    from harness.benchmarks.suite import NEGATIVE, POSITIVE, TOPIC_KEYWORDS

    def words(sentence: str) -> set[str]:
        return set(re.findall(r"[a-z]+", sentence.lower()))

    for row in _rows("sentiment_lexicon"):
        pool, other = (POSITIVE, NEGATIVE) if row["label"] == 1 else (NEGATIVE, POSITIVE)
        assert words(row["sentence"]) & set(pool) and not words(row["sentence"]) & set(other)
    for row in _rows("topic_lexicon"):
        hits = [i for i, kws in enumerate(TOPIC_KEYWORDS) if words(row["sentence"]) & set(kws)]
        assert hits == [row["label"]]


def test_extraction_answers_occur_in_passage() -> None:
    for name, field in (("extract_person", "person"), ("extract_city", "city")):
        for row in _rows(name):
            assert row["answer"] == row[field]
            assert re.search(rf"\b{re.escape(row['answer'])}\b", row["passage"])
            assert 2 <= row["passage"].count(".") <= 3


def test_list_answers() -> None:
    for row in _rows("list_first"):
        assert 3 <= len(row["items"]) <= 6 and row["answer"] == row["items"][0]
    for row in _rows("list_max"):
        assert 3 <= len(row["items"]) <= 6 and row["answer"] == str(max(row["items"]))


# ------------------------------------------------------------------------------------ task files
def test_twelve_tasks_in_six_clusters_of_two() -> None:
    assert set(TASKS) == set(GENERATORS)
    clusters: dict[str, list[str]] = {}
    for name, task in TASKS.items():
        clusters.setdefault(task["cluster"], []).append(name)
    assert len(clusters) == 6 and all(len(v) == 2 for v in clusters.values())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_file_schema(name: str) -> None:
    task = TASKS[name]
    assert set(task) <= TASK_KEYS
    assert task["name"] == name
    assert task["data"]["generator"] in GENERATORS
    assert set(task["data"]["sizes"]) >= {task["data"]["eval_split"], task["data"]["fewshot_split"]}
    assert (TEMPLATE_DIR / task["templates"]).is_dir()
    if task["kind"] == "choice":
        assert "target" not in task and "generation" not in task
        assert set(task["metrics"]) <= {"acc", "acc_norm"}
    else:
        assert task["kind"] == "generate" and "options" not in task and "answer" not in task
        assert set(task["metrics"]) <= {"exact_match", "f1", "rouge_l"}


# -------------------------------------------------------------------------------------- templates
def _options(task: dict[str, Any], tpl: dict[str, Any], row: dict[str, Any]) -> list[str]:
    spec = tpl.get("options", task["options"])
    if isinstance(spec, str):
        return [str(o) for o in ENV.compile_expression(spec)(**row)]
    return [ENV.from_string(o).render(**row) for o in spec]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_templates_render_on_first_rows(name: str) -> None:
    task = TASKS[name]
    paths = sorted((TEMPLATE_DIR / task["templates"]).glob("*.yaml"))
    assert len(paths) >= 6
    rows = generate_rows(task["data"]["generator"], task["data"]["seed"], task["data"]["eval_split"], 3)
    prompts = set()
    for path in paths:
        tpl = _load(path)
        assert re.fullmatch(r"[a-z0-9_]+", path.stem)
        assert set(tpl) <= TEMPLATE_KEYS and set(tpl["tags"]) == {"options", "style", "turned_around"}
        assert tpl["tags"]["style"] in {"question", "instruction", "statement", "completion"}
        for row in rows:
            ctx = dict(row)
            if task["kind"] == "choice":
                ctx["options"] = _options(task, tpl, row)
                label = ENV.compile_expression(task["answer"])(**row)
                assert 0 <= label < len(ctx["options"]) == len(_options(task, {}, row))
                if tpl["tags"]["options"]:
                    assert all(o in ENV.from_string(tpl["prompt"]).render(**ctx) for o in ctx["options"])
            else:
                assert "options" not in tpl
                assert isinstance(ENV.compile_expression(task["target"])(**row), str)
            prompt = ENV.from_string(tpl["prompt"]).render(**ctx)
            assert prompt and prompt == prompt.rstrip(), f"{path}: prompt ends with whitespace"
            assert "{{" not in prompt and "{%" not in prompt
            prompts.add(prompt)
    assert len(prompts) == len(paths) * len(rows)  # templates are distinctly worded


@pytest.mark.parametrize("name", sorted(n for n, t in TASKS.items() if t["kind"] == "choice"))
def test_choice_templates_mix_listed_and_unlisted_options(name: str) -> None:
    tpls = [_load(p) for p in (TEMPLATE_DIR / TASKS[name]["templates"]).glob("*.yaml")]
    listed = [t["tags"]["options"] for t in tpls]
    assert listed.count(True) >= 2 and listed.count(False) >= 2
    assert any("options" in t for t in tpls)  # at least one verbaliser override
