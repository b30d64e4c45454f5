"""IFEval: verdicts equal lm-eval's own ifeval scoring, offline, through the harness's data path.

The reference is always lm-eval's `lm_eval.tasks.ifeval.utils.process_results` on the rows exactly
as read from the JSON lines file, while the harness side reads them through its own loader
(`datasets`, which fills every instruction's unused keyword arguments with None), renders them with
the task's template and aggregates with its own code. Equality therefore checks the plumbing, not
only that a function equals itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.ifeval import fixed_random_draws, ifeval_metric, lm_eval_ifeval
from harness.chat import PLAIN
from harness.engine.base import GenerateRequest
from harness.engine.scripted import ScriptedBackend
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.eval.run import run
from harness.files import BUILTIN_TASKS
from harness.tasks.registry import Registry, load_task

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IFEVAL_DIR = SHARED / "ifeval"
needs_shared = pytest.mark.skipif(
    not (IFEVAL_DIR / "input_data.jsonl").is_file(),
    reason=f"shared IFEval rows not found at {IFEVAL_DIR} (the project's shared/ data folder is absent)",
)
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def raw_rows() -> dict[int, dict[str, Any]]:
    """The shared rows exactly as the file holds them (what lm-eval's scorer is given here)."""
    lines = (IFEVAL_DIR / "input_data.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["key"]: row for row in map(json.loads, lines)}


def lm_eval_verdicts(row: dict[str, Any], response: str) -> dict[str, Any]:
    """lm-eval's own per-sample result, as floats like the harness records them.

    Under the same fixed random draws as the harness: on rows 1122 and 1129 lm-eval's checker
    replaces a rejected letter with a random one, so unseeded its verdict is a coin toss.
    """
    with fixed_random_draws():
        result = lm_eval_ifeval().process_results(row, [response])
    return {k: [float(v) for v in result[k]] if isinstance(result[k], list) else float(result[k]) for k in METRICS}


def synthetic_responses(prompt: str) -> list[str]:
    """Cheap responses that trip different checkers: case, JSON, quotation, repetition."""
    return [prompt, prompt.upper(), json.dumps({"response": prompt}), f'"{prompt.lower()}"']


def ifeval_registry() -> Registry:
    """A registry holding only the shipped ifeval task.

    Built by hand so these tests load exactly tasks/ifeval.yaml and its template, whatever state
    the other built-in task files are in (the CLI test below goes through the full registry).
    """
    registry = Registry.__new__(Registry)
    registry.tasks = {"ifeval": load_task(BUILTIN_TASKS / "ifeval.yaml")}
    return registry


def harness_rows() -> tuple[list[str], list[dict[str, Any]]]:
    """The shared rows as the harness loads them for `--data ifeval=FOLDER`."""
    task = ifeval_registry().get("ifeval")
    config = RunConfig(tasks="ifeval", data_folders=(("ifeval", str(IFEVAL_DIR)),))
    evaluation, pool = load_task_splits(task, config)
    assert pool is None
    return list(evaluation.ids), list(evaluation.rows)


# -- offline NLTK data ------------------------------------------------------------------------------


def test_checkers_import_and_run_offline_without_any_download(tmp_path):
    """A fresh interpreter with no NLTK data anywhere but the project's: nothing may download."""
    script = (
        "import nltk\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('nltk.download was called')\n"
        "nltk.download = refuse\n"
        "import harness.benchmarks.ifeval\n"
        "from lm_eval.tasks.ifeval import instructions_util as u\n"
        "assert u.count_sentences('Dr. Smith went home. He was tired. It rained at 5 p.m. today.') == 3\n"
        "assert nltk.word_tokenize('Hello there, Mr. Smith.') == ['Hello', 'there', ',', 'Mr.', 'Smith', '.']\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env["HOME"] = str(tmp_path)  # no ~/nltk_data to fall back on
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_shipped_punkt_tab_is_complete():
    """The English parameters as shipped (see harness/data_files/nltk_data/README.md)."""
    import nltk
    from nltk.tokenize.punkt import load_punkt_params

    from harness.benchmarks.ifeval import NLTK_DATA

    params = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/", paths=[str(NLTK_DATA)]))
    sizes = (len(params.abbrev_types), len(params.sent_starters), len(params.collocations), len(params.ortho_context))
    assert sizes == (156, 39, 37, 20366)
    assert {"dr", "mr", "u.s", "ph.d"} <= params.abbrev_types and ("##number##", "dividend") in params.collocations


# -- row validation ---------------------------------------------------------------------------------


def test_bad_rows_fail_with_one_line_naming_row_and_field():
    row = {"key": 7, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    assert ifeval_metric("no commas here", [""], row)["prompt_level_strict_acc"] == 1.0
    cases = [
        ({k: v for k, v in row.items() if k != "kwargs"}, "IFEval row key=7: missing field 'kwargs'"),
        ({**row, "kwargs": [{}, {}]}, "field 'kwargs' has 2 entries for 1 instructions"),
        ({**row, "instruction_id_list": ["no:such"]}, "names unknown instruction 'no:such'"),
        ({**row, "kwargs": "{}"}, "field 'kwargs' must be a list of mappings"),
    ]
    for bad, message in cases:
        with pytest.raises(HarnessError, match=message) as info:
            ifeval_metric("x", [""], bad)
        assert "\n" not in str(info.value)


@needs_shared
def test_verdicts_are_reproducible_and_leave_global_random_alone():
    """Rows whose checker draws at random still score the same every time (see harness.ifeval)."""
    import random

    rows = raw_rows()
    random.seed(99)
    expected_next = random.random()
    random.seed(99)
    for key in (1122, 1129):
        verdicts = {json.dumps(ifeval_metric(rows[key]["prompt"], [""], rows[key])) for _ in range(20)}
        assert len(verdicts) == 1, key
    assert random.random() == expected_next


# -- hand-written responses -------------------------------------------------------------------------

_WORDS = " ".join(f"Raymond ruled Tripoli for a long time and word {i} follows" for i in range(40))

# (row key, response, expected strict per instruction, expected loose per instruction)
HAND_WRITTEN = [
    (1001, "Day one: fly to Tokyo and rest.\nDay two: walk in Kyoto.", [1], [1]),
    (1001, "Day one, fly to Tokyo.", [0], [0]),
    # A chatty first line with a comma fails strictly; the loose check drops the first line.
    (1001, "Sure, here it is:\nDay one: fly to Tokyo.", [0], [1]),
    (1075, '```json\n{"advertisement": "Comfy diapers for happy babies"}\n```', [1], [1]),
    (1075, "Buy comfy diapers today!", [0], [0]),
    (1128, "The sentiment is negative. Is there anything else I can help with?", [1], [1]),
    # A sign-off after the end phrase fails strictly; the loose check drops the last line.
    (1128, "The sentiment is negative. Is there anything else I can help with?\nThanks!", [0], [1]),
    (1322, "<<Kotlin vs Java>>\nKotlin is concise and Java is everywhere.", [1], [1]),
    (122, '"The internet began as ARPANET and now connects billions of people."', [1], [1]),
    (122, "The internet began as ARPANET.", [0], [0]),
    (1246, "Roses are red and the product is new.\nP.P.S. Order today.", [1], [1]),
    (1098, "Allah\n******\nYahweh", [1], [1]),
    # Key 1000: no commas, at least 3 highlighted sections, at least 300 words.
    (1000, f"*Early life* *The crusades* *Legacy* {_WORDS}", [1, 1, 1], [1, 1, 1]),
    (1000, f"*Early life* *Legacy* {_WORDS}, the end", [0, 0, 1], [0, 0, 1]),
    (1000, "", [0, 0, 0], [0, 0, 0]),
]


@needs_shared
@pytest.mark.parametrize(("key", "response", "strict", "loose"), HAND_WRITTEN)
def test_hand_written_responses(key, response, strict, loose):
    rows = raw_rows()
    ids, loaded = harness_rows()
    harness_row = loaded[ids.index(str(key))]
    ours = ifeval_metric(response, [""], harness_row)
    assert ours == lm_eval_verdicts(rows[key], response)
    assert ours["inst_level_strict_acc"] == strict and ours["inst_level_loose_acc"] == loose
    assert ours["prompt_level_strict_acc"] == float(all(strict))
    assert ours["prompt_level_loose_acc"] == float(all(loose))


# -- every shared prompt ----------------------------------------------------------------------------


@needs_shared
def test_every_prompt_matches_lm_eval_per_prompt_and_instruction():
    rows = raw_rows()
    ids, loaded = harness_rows()
    assert len(loaded) == len(rows) == 541
    mismatches = []
    for row_id, row in zip(ids, loaded, strict=True):
        raw = rows[int(row_id)]
        assert row["prompt"] == raw["prompt"] and list(row["instruction_id_list"]) == raw["instruction_id_list"]
        for response in synthetic_responses(raw["prompt"]):
            if ifeval_metric(response, [""], row) != lm_eval_verdicts(raw, response):
                mismatches.append((row_id, response[:60]))
    assert not mismatches, f"{len(mismatches)} responses scored differently, first: {mismatches[:3]}"


@needs_shared
def test_run_record_aggregates_like_lm_eval(tmp_path):
    """A whole run over the 541 prompts: per-sample values and the four scores equal lm-eval's."""
    rows = raw_rows()

    def respond(index: int, request: GenerateRequest) -> str:
        return synthetic_responses(request.context)[index % 4]

    backend = ScriptedBackend("scripted-ifeval-responder", generate=respond)
    config = RunConfig(tasks="ifeval", data_folders=(("ifeval", str(IFEVAL_DIR)),))
    directory, record = run(config, backend, ifeval_registry(), tmp_path, run_id="scripted")
    assert all(r.max_new_tokens == 1280 and r.stop == () for r in backend.requests)

    samples = [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 541
    expected: dict[str, list[Any]] = {name: [] for name in METRICS}
    for sample in samples:
        raw = rows[int(sample["row_id"])]
        assert sample["prompt"] == raw["prompt"] and sample["references"] == [""]
        reference = lm_eval_verdicts(raw, sample["response"])
        assert sample["metrics"] == reference, sample["row_id"]
        for name in METRICS:
            expected[name].append(reference[name])

    utils = lm_eval_ifeval()
    lm_eval_scores = {
        "prompt_level_strict_acc": sum(expected["prompt_level_strict_acc"]) / 541,
        "prompt_level_loose_acc": sum(expected["prompt_level_loose_acc"]) / 541,
        "inst_level_strict_acc": utils.agg_inst_level_acc(expected["inst_level_strict_acc"]),
        "inst_level_loose_acc": utils.agg_inst_level_acc(expected["inst_level_loose_acc"]),
    }
    (score,) = record.scores
    assert score.task == "ifeval" and score.template == "prompt" and score.n == 541
    for name, value in lm_eval_scores.items():
        assert score.metrics[name].mean == pytest.approx(value, abs=1e-12), name
    # The scripted responses follow some instructions and miss others, so the check is not vacuous.
    assert 0 < lm_eval_scores["inst_level_loose_acc"] < 1


# -- the task as a user runs it ---------------------------------------------------------------------


@needs_shared
def test_task_renders_the_raw_prompt_and_refuses_few_shot():
    task = ifeval_registry().get("ifeval")
    assert [t.id for t in task.templates] == ["prompt"]
    assert task.generation.max_new_tokens == 1280 and task.generation.stop == ()
    config = RunConfig(tasks="ifeval", limit=20, data_folders=(("ifeval", str(IFEVAL_DIR)),))
    evaluation, pool = load_task_splits(task, config)
    samples = Planner(config, PLAIN).plan_task(task, evaluation, pool)
    rows = raw_rows()
    assert [s.row_id for s in samples] == [str(k) for k in list(rows)[:20]]
    assert all(s.prompt == rows[int(s.row_id)]["prompt"] for s in samples)
    with pytest.raises(HarnessError, match="needs 'data.fewshot_split'"):
        load_task_splits(task, RunConfig(tasks="ifeval", shots=(1,), data_folders=config.data_folders))


@needs_shared
def test_cli_end_to_end_with_the_tiny_model(tiny_models, tmp_path):
    """The shipped task asks for 1280 new tokens, more than the tiny model's 1024 positions, so the
    run uses a copy of the task file with a short generation (everything else unchanged)."""
    from harness.cli import main

    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    text = (BUILTIN_TASKS / "ifeval.yaml").read_text(encoding="utf-8")
    assert "max_new_tokens: 1280" in text
    (task_dir / "ifeval.yaml").write_text(text.replace("max_new_tokens: 1280", "max_new_tokens: 24"))
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "ifeval", "--task-dir", str(task_dir),
                 "--data", f"ifeval={IFEVAL_DIR}", "--limit", "4", "--out", str(tmp_path / "out"), "--run-id", "r"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "r" / "run.json").read_text())
    (score,) = record["scores"]
    assert score["n"] == 4 and set(score["metrics"]) == set(METRICS)
    samples = [json.loads(line) for line in (tmp_path / "out" / "r" / "samples.jsonl").read_text().splitlines()]
    rows = raw_rows()
    for sample in samples:
        assert sample["metrics"] == lm_eval_verdicts(rows[int(sample["row_id"])], sample["response"])
