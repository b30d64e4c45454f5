"""Super-NaturalInstructions: loading the task files, the paper's encodings, the official scorer.

The references in this file are written independently of harness/niv2.py: the encodings follow
Tk-Instruct's src/ni_collator.py line by line, and exact match and ROUGE-L follow
src/compute_metrics.py with rouge-score's tokenisation (lower case, non-alphanumerics to spaces,
Porter stemming of tokens longer than 3 characters) and an LCS table written out here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import string
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from nltk.stem import porter

from harness.benchmarks.niv2 import load_rows, niv2_metric
from harness.chat import PLAIN
from harness.engine.base import GenerateRequest
from harness.engine.scripted import ScriptedBackend
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.eval.run import run as run_harness
from harness.files import PROJECT_ROOT
from harness.metrics import flatten, mean_and_stderr
from harness.tasks.registry import load_task
from harness.tasks.schema import Task

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIV2 = SHARED / "niv2"
needs_shared = pytest.mark.skipif(
    not (NIV2 / "tasks").is_dir(), reason=f"shared NIv2 data not found at {NIV2} (the real-data tests need it)"
)
SHARED_TASKS = {
    "task020_mctaco_span_based_question": "Answerability Classification",
    "task039_qasc_find_overlapping_words": "Overlap Extraction",
    "task1156_bard_analogical_reasoning_tools": "Word Analogy",
    "task1345_glue_qqp_question_paraprashing": "Question Rewriting",
    "task1612_sick_label_classification": "Textual Entailment",
    "task1664_winobias_text_generation": "Coreference Resolution",
    "task828_copa_commonsense_cause_effect": "Cause Effect Classification",
    "task879_schema_guided_dstc8_classification": "Dialogue Act Recognition",
}
ENCODINGS = {  # template id -> ni_collator settings (add_task_name, add_task_definition, pos, neg, explanation)
    "task_id": (True, False, 0, 0, False),
    "def": (False, True, 0, 0, False),
    "def_pos1": (False, True, 1, 0, False),
    "def_pos2": (False, True, 2, 0, False),
    "pos2": (False, False, 2, 0, False),
    "def_pos2_neg2": (False, True, 2, 2, False),
    "def_pos2_neg2_expl": (False, True, 2, 2, True),
}


@pytest.fixture(scope="module")
def niv2_task() -> Task:
    return load_task(PROJECT_ROOT / "tasks" / "niv2.yaml")


def with_options(task: Task, **options: Any) -> Task:
    return dataclasses.replace(task, data=dataclasses.replace(task.data, loader_options=options))


# -- loading ------------------------------------------------------------------------------------------


@needs_shared
def test_shared_folder_loads_8_tasks_of_100_rows_interleaved(niv2_task, caplog):
    with caplog.at_level(logging.WARNING, logger="harness.niv2"):
        rows = load_rows(niv2_task, "test", NIV2)
    assert "111 of the 119 tasks listed" in caplog.text
    assert len(rows) == 800 and len({r["id"] for r in rows}) == 800
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task_name"]].append(row)
    assert {name: len(group) for name, group in by_task.items()} == dict.fromkeys(SHARED_TASKS, 100)
    # Interleaved in test_tasks.txt order, so the first 8 rows are one instance of every task.
    order = [n for n in (NIV2 / "test_tasks.txt").read_text().split() if n in SHARED_TASKS]
    assert [r["task_name"] for r in rows[:8]] == order
    for name, group in by_task.items():
        raw = json.loads((NIV2 / "tasks" / f"{name}.json").read_text())
        assert [r["id"] for r in group] == [i["id"] for i in raw["Instances"][:100]]
        first = group[0]
        assert first["category"] == SHARED_TASKS[name] == raw["Categories"][0]
        assert first["definition"] == raw["Definition"][0]
        assert first["input"] == raw["Instances"][0]["input"]
        assert first["references"] == raw["Instances"][0]["output"]
        assert first["positive_examples"] == [
            {k: e.get(k) for k in ("input", "output", "explanation")} for e in raw["Positive Examples"]
        ]
        assert len(first["negative_examples"]) == len(raw["Negative Examples"])
    assert rows[0]["id"] == "task1664-cbc3cfb8120148c29989099f936bdf87"


@needs_shared
def test_tasks_folder_itself_and_loader_options(niv2_task):
    # The tasks folder itself finds test_tasks.txt in its parent.
    assert [r["id"] for r in load_rows(niv2_task, "test", NIV2 / "tasks")] == [
        r["id"] for r in load_rows(niv2_task, "test", NIV2)
    ]
    names = ["task879_schema_guided_dstc8_classification", "task020_mctaco_span_based_question"]
    picked = with_options(niv2_task, tasks=names, instances_per_task=3, interleave=False)
    rows = load_rows(picked, "test", NIV2)
    assert [r["id"][:7] for r in rows] == ["task879"] * 3 + ["task020"] * 3


def write_task(directory: Path, name: str, **changes: Any) -> Path:
    """A hand-made task file in the NIv2 format (all the keys the official files have)."""
    task = {
        "Contributors": ["Test"], "Source": ["handmade"], "URL": [""], "Categories": ["Toy Classification"],
        "Reasoning": [], "Definition": ["Say whether the number is even or odd"],
        "Input_language": ["English"], "Output_language": ["English"], "Instruction_language": ["English"],
        "Domains": ["Mathematics"],
        "Positive Examples": [{"input": "2", "output": "even", "explanation": "2 = 2 x 1."},
                              {"input": "7", "output": "odd", "explanation": "7 = 2 x 3 + 1."}],
        "Negative Examples": [{"input": "4", "output": "odd", "explanation": "4 is even."}],
        "Instances": [{"id": f"{name}-{i}", "input": str(i), "output": ["even" if i % 2 == 0 else "odd", "?"]}
                      for i in range(5)],
        "Instance License": ["Apache 2.0"],
    }
    task.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(task))
    return path


def test_handmade_task_file_loads(niv2_task, tmp_path, caplog):
    write_task(tmp_path / "tasks", "task9001_toy_parity")
    write_task(tmp_path / "tasks", "task9002_toy_parity_two", Categories=["Other Toy"])
    (tmp_path / "test_tasks.txt").write_text("task9001_toy_parity\ntask9999_absent\ntask9002_toy_parity_two\n")
    with caplog.at_level(logging.WARNING, logger="harness.niv2"):
        rows = load_rows(with_options(niv2_task, instances_per_task=3), "test", tmp_path)
    assert "1 of the 3 tasks listed" in caplog.text and "task9999_absent" in caplog.text
    assert [r["id"] for r in rows] == [f"task900{t}_toy_parity{s}-{i}" for i in range(3)
                                       for t, s in ((1, ""), (2, "_two"))]
    assert rows[0] == {
        "id": "task9001_toy_parity-0", "task_name": "task9001_toy_parity", "category": "Toy Classification",
        "definition": "Say whether the number is even or odd",
        "positive_examples": [{"input": "2", "output": "even", "explanation": "2 = 2 x 1."},
                              {"input": "7", "output": "odd", "explanation": "7 = 2 x 3 + 1."}],
        "negative_examples": [{"input": "4", "output": "odd", "explanation": "4 is even."}],
        "input": "0", "references": ["even", "?"],
    }
    assert rows[1]["category"] == "Other Toy"
    # Without a test_tasks.txt every task file in the folder is evaluated.
    (tmp_path / "test_tasks.txt").unlink()
    assert len(load_rows(niv2_task, "test", tmp_path / "tasks")) == 10


def test_handmade_task_renders_like_the_official_collator(niv2_task, tmp_path):
    write_task(tmp_path / "tasks", "task9001_toy_parity",
               **{"Negative Examples": [{"input": "4", "output": "odd"}]})  # no explanation key
    task = dataclasses.replace(niv2_task, data=dataclasses.replace(niv2_task.data, loader_options={}))
    config = RunConfig(tasks="niv2", templates="def_pos2_neg2_expl", limit=1,
                       data_folders=(("niv2", str(tmp_path)),))
    evaluation, pool = load_task_splits(task, config)
    prompt = Planner(config, PLAIN).plan_task(task, evaluation, pool)[0].prompt
    assert prompt == (
        "Definition: Say whether the number is even or odd.\n\n"
        " Positive Example 1 -\nInput: 2.\n Output: even.\n Explanation: 2 = 2 x 1.\n\n"
        " Positive Example 2 -\nInput: 7.\n Output: odd.\n Explanation: 7 = 2 x 3 + 1.\n\n"
        " Negative Example 1 -\nInput: 4.\n Output: odd.\n\n"
        "Now complete the following example -\nInput: 0.\nOutput:"
    )


@pytest.mark.parametrize(("changes", "expected"), [
    ({"Definition": []}, "NIv2 field 'Definition' must hold at least one non-empty string"),
    ({"Categories": None}, "NIv2 field 'Categories' must be a list of strings"),
    ({"Instances": [{"id": "x", "input": "1", "output": []}]}, "instance x needs 'output' as a non-empty list"),
    ({"Positive Examples": [{"input": "1"}]}, "Positive Examples[0] must have string fields 'input' and 'output'"),
])
def test_malformed_task_file_is_one_line_naming_the_file(niv2_task, tmp_path, changes, expected):
    path = write_task(tmp_path / "tasks", "task9001_toy_parity", **changes)
    with pytest.raises(HarnessError) as error:
        load_rows(niv2_task, "test", tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message


def test_missing_data_is_one_line_error(niv2_task, tmp_path, monkeypatch):
    with pytest.raises(HarnessError, match="no NIv2 task files") as error:
        load_rows(niv2_task, "test", tmp_path / "no_such_folder")
    assert "\n" not in str(error.value) and "--data niv2=FOLDER" in str(error.value)

    (tmp_path / "tasks").mkdir()
    (tmp_path / "test_tasks.txt").write_text("task1_a\ntask2_b\n")
    with pytest.raises(HarnessError, match="none of the 2 NIv2 tasks listed") as error:
        load_rows(niv2_task, "test", tmp_path)
    assert "\n" not in str(error.value)

    (tmp_path / "tasks" / "task1_a.json").write_text("{not json")
    with pytest.raises(HarnessError, match=r"task1_a\.json: invalid JSON at line 1"):
        load_rows(niv2_task, "test", tmp_path)

    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HarnessError) as error:
        load_rows(niv2_task, "test", None)
    assert "\n" not in str(error.value) and "pass --data niv2=FOLDER" in str(error.value)
    with pytest.raises(HarnessError, match="only the 'test' split"):
        load_rows(niv2_task, "train", tmp_path)
    with pytest.raises(HarnessError, match="instances_per_task' must be a positive integer"):
        load_rows(with_options(niv2_task, instances_per_task=0), "test", tmp_path)


# -- encodings ----------------------------------------------------------------------------------------


def official_encoding(row: dict[str, Any], task_name: bool, definition: bool, pos: int, neg: int,
                      explanation: bool) -> str:
    """Tk-Instruct's DataCollatorForNI.__call__ source text (no length cap), stripped as run_gpt3.py does."""
    task_input = "Now complete the following example -\n"
    task_input += f"Input: {row['input'].strip()}"
    if task_input[-1] not in string.punctuation:
        task_input += "."
    task_input += "\n"
    task_input += "Output: "
    name = row["task_name"] + ". " if task_name else ""
    text = ""
    if definition:
        text = "Definition: " + row["definition"].strip()
        if text[-1] not in string.punctuation:
            text += "."
        text += "\n\n"
    blocks = []
    for kind, examples, count in (("Positive", row["positive_examples"], pos),
                                  ("Negative", row["negative_examples"], neg)):
        for idx, example in enumerate(examples[:count]):
            block = f" {kind} Example {idx + 1} -\n"
            block += f"Input: {example['input'].strip()}"
            if block[-1] not in string.punctuation:
                block += "."
            block += "\n"
            block += f" Output: {example['output'].strip()}"
            if block[-1] not in string.punctuation:
                block += "."
            block += "\n"
            if explanation and example["explanation"] is not None:
                block += f" Explanation: {example['explanation'].strip()}"
                if block[-1] not in string.punctuation:
                    block += "."
                block += "\n"
            block += "\n"
            blocks.append(block)
    return (name + text + "".join(blocks) + task_input).strip()


DEF_879 = ("Definition: You are given a sentence from a conversation between a human and a virtual assistant. "
           "Your task is to identify whether the sentence is a question or not. Answer with Yes or No.\n\n")
POS_879 = (" Positive Example 1 -\nInput: I am feeling hungry so I would like to find a place to eat.\n"
           " Output: No.\n\n",
           " Positive Example 2 -\nInput: Do you have a specific which you want the eating place to be located at?\n"
           " Output: Yes.\n\n")
NEG_879 = (" Negative Example 1 -\nInput: Is there some other restaurant which you can suggest?\n Output: No.\n\n",
           " Negative Example 2 -\nInput: Can you please confirm that you want to book a table for 2 at 11:30 am at "
           "the Bird Dog restaurant in Palo Alto for today.\n Output: No.\n\n")
EXPL_879 = (" Explanation: The user is informing the intent, but not asking any question here.\n",
            " Explanation: The system is asking the user for location preferences.\n",
            " Explanation: The user is asking for other alternatives. So, its a question and output should be 1.\n",
            " Explanation: The system is asking the user to confirm the suggested booking. So, its a question and "
            "output should be 1.\n")
QUERY_879 = "Now complete the following example -\nInput: Which city should I search?\nOutput:"


def explained(block: str, explanation: str) -> str:
    return block[:-1] + explanation + "\n"


GOLDEN_879 = {
    "task_id": "task879_schema_guided_dstc8_classification. " + QUERY_879,
    "def": DEF_879 + QUERY_879,
    "def_pos1": DEF_879 + POS_879[0] + QUERY_879,
    "def_pos2": DEF_879 + POS_879[0] + POS_879[1] + QUERY_879,
    "pos2": POS_879[0].lstrip() + POS_879[1] + QUERY_879,
    "def_pos2_neg2": DEF_879 + "".join(POS_879 + NEG_879) + QUERY_879,
    "def_pos2_neg2_expl": DEF_879 + "".join(
        explained(block, expl) for block, expl in zip(POS_879 + NEG_879, EXPL_879, strict=True)) + QUERY_879,
}


def plan_prompts(task: Task, folder: Path, limit: int | None = None) -> dict[tuple[str, str], str]:
    config = RunConfig(tasks="niv2", limit=limit, data_folders=(("niv2", str(folder)),))
    evaluation, pool = load_task_splits(task, config)
    return {(s.template.id, s.row_id): s.prompt for s in Planner(config, PLAIN).plan_task(
        task, evaluation, pool)}


def test_templates_are_the_papers_encodings(niv2_task):
    assert sorted(t.id for t in niv2_task.templates) == sorted(ENCODINGS)
    assert all(t.tags.style == "instruction" and t.tags.options is False for t in niv2_task.templates)


@needs_shared
def test_golden_prompts_for_every_encoding(niv2_task):
    prompts = plan_prompts(niv2_task, NIV2, limit=8)
    row_id = "task879-65588d02e54245ab9e5dfc6135618c9d"
    for template_id, expected in GOLDEN_879.items():
        assert prompts[(template_id, row_id)] == expected, template_id


@needs_shared
def test_every_shared_row_renders_as_the_official_collator(niv2_task):
    rows = {r["id"]: r for r in load_rows(niv2_task, "test", NIV2)}
    prompts = plan_prompts(niv2_task, NIV2)
    assert len(prompts) == 800 * len(ENCODINGS)
    for (template_id, row_id), prompt in prompts.items():
        assert prompt == official_encoding(rows[row_id], *ENCODINGS[template_id]), (template_id, row_id)


def test_final_period_rule_matches_string_punctuation(niv2_task, tmp_path):
    """Every ASCII punctuation mark (and a few that are not, by Python's definition) at a field's end."""
    endings = list(string.punctuation) + ["a", "7", "\u2019", "\u2026", "\u3002"]
    write_task(tmp_path / "tasks", "task9001_toy_parity", Instances=[
        {"id": f"i{k}", "input": f" x{end} ", "output": ["y"]} for k, end in enumerate(endings)
    ], Definition=["Mark the end" + "\\"])
    rows = {r["id"]: r for r in load_rows(with_options(niv2_task, instances_per_task=100), "test", tmp_path)}
    prompts = plan_prompts(niv2_task, tmp_path)
    for (template_id, row_id), prompt in prompts.items():
        assert prompt == official_encoding(rows[row_id], *ENCODINGS[template_id]), (template_id, row_id)


# -- scoring ------------------------------------------------------------------------------------------

STEMMER = porter.PorterStemmer()


def official_normalize(text: str) -> str:
    """compute_metrics.normalize_answer: lower, remove punctuation, fix whitespace (articles kept)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(text.split())


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokeniser with the Porter stemmer, written out."""
    cleaned = "".join(ch if ("a" <= ch <= "z" or "0" <= ch <= "9") else " " for ch in text.lower())
    return [STEMMER.stem(t) if len(t) > 3 else t for t in cleaned.split()]


def lcs_f1(prediction: str, reference: str) -> float:
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred or not ref:
        return 0.0
    table = [[0] * (len(pred) + 1) for _ in range(len(ref) + 1)]
    for i, r in enumerate(ref, 1):
        for j, p in enumerate(pred, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if r == p else max(table[i - 1][j], table[i][j - 1])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def official_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """compute_metrics.compute_metrics: per-sample maxima over references, summed, x100 / n."""
    em = sum(max(official_normalize(p) == official_normalize(r) for r in refs)
             for p, refs in zip(predictions, references, strict=True))
    rl = sum(max(lcs_f1(p, r) for r in refs) for p, refs in zip(predictions, references, strict=True))
    return {"niv2_exact_match": 100.0 * em / len(references), "niv2_rouge_l": 100.0 * rl / len(references)}


def fixed_prediction(row: dict[str, Any], position: int) -> str:
    """Predictions that exercise the rules: case, punctuation, articles, stemming, other references."""
    references = row["references"]
    choices = [
        references[0],
        " " + references[0].upper() + "!!",
        "the " + references[0],
        references[-1] + " and more running words",
        "",
        "Totally unrelated answers",
        references[0].replace(",", " ;"),
        row["input"][:40],
    ]
    return choices[position % len(choices)]


def test_metric_on_fixed_predictions_matches_official_formula():
    cases = [
        ("The, accountant, she", ["the, accountant, she"]),
        ("accountant she", ["the, accountant, she"]),  # NIv2 keeps articles: no exact match
        ("Cause.", ["cause"]),
        ("  yes\n", ["Yes"]),
        ("knives", ["scissors", "sword", "glass", "knife"]),  # stemming: knive vs knife differ
        ("running dogs", ["The dog runs"]),
        ("", ["anything"]),
        ("What is the best way to learn?", ["How do I learn best?", "Best way to learn"]),
    ]
    for prediction, references in cases:
        values = niv2_metric(prediction, references, {})
        assert set(values) == {"niv2_exact_match", "niv2_rouge_l"}
        assert values["niv2_exact_match"] == float(max(official_normalize(prediction) == official_normalize(r)
                                                       for r in references))
        assert values["niv2_rouge_l"] == pytest.approx(max(lcs_f1(prediction, r) for r in references), abs=1e-12)
    assert niv2_metric("accountant she", ["the, accountant, she"], {})["niv2_exact_match"] == 0.0
    assert niv2_metric("  Cause.", ["cause"], {})["niv2_exact_match"] == 1.0
    # Aggregation: the harness's mean of per-sample values, x100 in reports, equals the official number.
    predictions = [c[0] for c in cases]
    references = [c[1] for c in cases]
    per_sample = [niv2_metric(p, r, {}) for p, r in zip(predictions, references, strict=True)]
    official = official_scores(predictions, references)
    for name in official:
        mean, _ = mean_and_stderr(flatten([v[name] for v in per_sample]), seed=0)
        assert 100 * mean == pytest.approx(official[name], abs=1e-9)


@needs_shared
def test_run_scores_per_category_equal_the_official_computation(niv2_task, tmp_path):
    """Through the runner with fixed predictions: every score, overall and per group, as the official script."""
    taken: dict[str, int] = {}
    rows = []  # what --limit 5 evaluates: the first 5 instances of each task, in the loader's order
    for row in load_rows(niv2_task, "test", NIV2):
        taken[row["task_name"]] = taken.get(row["task_name"], 0) + 1
        if taken[row["task_name"]] <= 5:
            rows.append(row)
    assert len(rows) == 40
    by_input = {r["input"].strip(): (i, r) for i, r in enumerate(rows)}
    assert len(by_input) == len(rows)

    def predict(index: int, request: GenerateRequest) -> str:
        marker = "Now complete the following example -\nInput: "
        text = request.context.rsplit(marker, 1)[1].rsplit("\nOutput:", 1)[0]
        position, row = next(by_input[k] for k in (text.strip(), text.strip()[:-1]) if k in by_input)
        return fixed_prediction(row, position)

    class OneTask:
        def select(self, spec: str) -> list[Task]:
            return [niv2_task]

    config = RunConfig(tasks="niv2", templates="def_pos2", limit=5, data_folders=(("niv2", str(NIV2)),))
    _, record = run_harness(config, ScriptedBackend("fixed-predictions", generate=predict), OneTask(), tmp_path,
                            run_id="r")
    predictions = [fixed_prediction(r, i) for i, r in enumerate(rows)]
    groups = {("", ""): list(range(len(rows)))}
    for i, row in enumerate(rows):
        for field in ("category", "task_name"):
            groups.setdefault((field, row[field]), []).append(i)
    scores = {(s.group.field, s.group.value) if s.group else ("", ""): s for s in record.scores}
    assert set(scores) == set(groups) and len(groups) == 1 + 8 + 8
    for key, members in groups.items():
        official = official_scores([predictions[i] for i in members], [rows[i]["references"] for i in members])
        assert scores[key].n == len(members)
        for name, value in official.items():
            assert 100 * scores[key].metrics[name].mean == pytest.approx(value, abs=1e-9), (key, name)
    assert 0 < scores[("", "")].metrics["niv2_exact_match"].mean < 1


# -- end to end ---------------------------------------------------------------------------------------


@needs_shared
def test_end_to_end_run_with_tiny_model(tiny_models, tmp_path):
    from harness.cli import main
    from harness.eval.record import RunRecord

    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "niv2", "--data", f"niv2={NIV2}",
                 "--limit", "2", "--out", str(tmp_path), "--run-id", "r"])
    assert code == 0
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["counts"]["samples"] == 16 * len(ENCODINGS)
    grouped = [s for s in record["scores"] if "group" in s]
    categories = {s["group"]["value"] for s in grouped if s["group"]["field"] == "category"}
    assert categories == set(SHARED_TASKS.values())  # --limit 2: 2 instances of each of the 8 tasks
    assert {s["group"]["value"]: s["n"] for s in grouped if s["group"]["field"] == "task_name"} == dict.fromkeys(
        SHARED_TASKS, 2)  # per group entry, n counts one template's samples
    for score, entry in zip(record["scores"], RunRecord.from_json(record).scores, strict=True):
        assert set(score["metrics"]) == {"niv2_exact_match", "niv2_rouge_l"}
        # Ranked by ROUGE-L, NIv2's headline metric, also once run.json has sorted the metric keys.
        assert entry.primary == "niv2_rouge_l"
        assert all(0.0 <= m["mean"] <= 1.0 for m in score["metrics"].values())
    per_template = [s for s in record["scores"] if "group" not in s]
    assert sorted(s["template"] for s in per_template) == sorted(ENCODINGS)
    assert all(s["n"] == 16 for s in per_template)
