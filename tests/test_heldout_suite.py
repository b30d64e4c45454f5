"""The FLAN/T0 held-out clusters as task files: loading, rendering, answers, golden prompts.

Every task is exercised offline on three hand-made rows per split in its hub schema
(`tests/data/heldout/<task>/`), pointed at with `RunConfig(data_dirs=...)` exactly as `--data-dir`
does. With the shared SuperGLUE exports present (`../shared/data/superglue`, string labels for RTE
and CB), every RTE/CB/COPA template is also rendered on the real rows and run end to end on the
built-in tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.chat import PLAIN
from harness.cli import main
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.tasks.registry import Registry

HELDOUT = Path(__file__).resolve().parent / "data" / "heldout"
SHARED_SUPERGLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "superglue"
needs_shared = pytest.mark.skipif(
    not all((SHARED_SUPERGLUE / t / "val.jsonl").is_file() for t in ("rte", "cb", "copa")),
    reason=f"shared SuperGLUE rows not found at {SHARED_SUPERGLUE} (rte/cb/copa val.jsonl); "
           "the hand-made rows still cover every template",
)

# task -> (cluster, eval split, few-shot split, hub fields every row has, answer index of each eval row)
TASKS: dict[str, tuple[str, str, str, tuple[str, ...], list[int]]] = {
    "rte": ("nli", "validation", "train", ("premise", "hypothesis", "label", "idx"), [0, 1, 0]),
    "cb": ("nli", "validation", "train", ("premise", "hypothesis", "label", "idx"), [1, 0, 2]),
    "anli_r1": ("nli", "dev_r1", "train_r1", ("uid", "premise", "hypothesis", "label", "reason"), [0, 2, 1]),
    "anli_r2": ("nli", "dev_r2", "train_r2", ("uid", "premise", "hypothesis", "label", "reason"), [2, 0, 1]),
    "anli_r3": ("nli", "dev_r3", "train_r3", ("uid", "premise", "hypothesis", "label", "reason"), [1, 2, 0]),
    "copa": ("commonsense", "validation", "train",
             ("premise", "choice1", "choice2", "question", "label", "idx"), [0, 1, 0]),
    "hellaswag": ("commonsense", "validation", "train",
                  ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type",
                   "label"), [0, 2, 3]),
    "piqa": ("commonsense", "validation", "train", ("goal", "sol1", "sol2", "label"), [0, 1, 0]),
    "story_cloze": ("commonsense", "test", "validation",
                    ("story_id", "input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4",
                     "sentence_quiz1", "sentence_quiz2", "answer_right_ending"), [0, 1, 1]),
    "wsc": ("coreference", "validation", "train",
            ("text", "span1_index", "span2_index", "span1_text", "span2_text", "idx", "label"), [1, 0, 1]),
    "winogrande": ("coreference", "validation", "train", ("sentence", "option1", "option2", "answer"), [1, 0, 0]),
    "wic": ("word_sense", "validation", "train",
            ("word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx", "label"), [0, 1, 0]),
    "boolq": ("reading_comprehension", "validation", "train", ("question", "passage", "idx", "label"), [1, 0, 1]),
    "arc_easy": ("closed_book_qa", "test", "train", ("id", "question", "choices", "answerKey"), [0, 2, 0]),
    "arc_challenge": ("closed_book_qa", "test", "train", ("id", "question", "choices", "answerKey"), [0, 2, 1]),
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def plan(registry, task_name, shots=(0,), templates="all", data_dir=HELDOUT, limit=None):
    config = RunConfig(tasks=task_name, templates=templates, shots=tuple(shots), limit=limit, chat="off",
                       data_dirs=(str(data_dir),))
    task = registry.get(task_name)
    evaluation, pool = load_task_splits(task, config)
    return task, evaluation, Planner(config, PLAIN).plan_task(task, evaluation, pool)


def rendered(registry, task_name, template_id, shots=0, row=0):
    _, evaluation, samples = plan(registry, task_name, (shots,), template_id)
    return next(s for s in samples if s.row_id == evaluation.ids[row])


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the task files ------------------------------------------------------------------------------


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_loads_with_cluster_splits_and_varied_templates(registry, task_name):
    cluster, eval_split, fewshot_split, _, _ = TASKS[task_name]
    task = registry.get(task_name)
    assert task.kind == "choice" and task.cluster == cluster
    assert (task.data.eval_split, task.data.fewshot_split) == (eval_split, fewshot_split)
    assert task.data.hub_path and not task.data.files, "held-out tasks name their hub dataset"
    assert len(task.templates) >= 8
    with_options = [t for t in task.templates if t.tags.options]
    assert len(with_options) >= 3 and len(task.templates) - len(with_options) >= 3
    assert len({t.tags.style for t in task.templates}) >= 3
    assert any(t.options is not None for t in task.templates), "some template has its own verbaliser"
    assert len({t.hash for t in task.templates}) == len(task.templates)


def test_clusters_and_related_clusters(registry):
    clusters = registry.clusters()
    for name, (cluster, *_rest) in TASKS.items():
        assert name in {t.name for t in clusters[cluster]}
    assert Registry().related_clusters("nli") == {"nli", "paraphrase"}
    assert Registry().related_clusters("paraphrase") == {"nli", "paraphrase"}
    assert {t.name for t in registry.select("nli")} == {"rte", "cb", "anli_r1", "anli_r2", "anli_r3"}


def test_shared_template_folders(registry):
    """The three ANLI rounds share one template folder, as do the two ARC sets."""
    assert registry.get("anli_r1").templates == registry.get("anli_r3").templates
    assert registry.get("arc_easy").templates == registry.get("arc_challenge").templates


def test_story_cloze_says_how_to_point_at_local_rows(registry):
    task = registry.get("story_cloze")
    assert (task.data.hub_path, task.data.hub_name) == ("LSDSem/story_cloze", "2016")
    assert "--data story_cloze=FOLDER" in task.description


# -- the hand-made rows --------------------------------------------------------------------------


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_hand_made_rows_follow_the_hub_schema(task_name):
    _, eval_split, fewshot_split, fields, _ = TASKS[task_name]
    for split in (eval_split, fewshot_split):
        rows = read_rows(HELDOUT / task_name / f"{split}.jsonl")
        assert len(rows) == 3
        for row in rows:
            assert set(row) == set(fields), f"{task_name}/{split}: {sorted(row)}"
    # The label types the answer expressions must cope with, as on the hub.
    first = read_rows(HELDOUT / task_name / f"{eval_split}.jsonl")[0]
    string_labels = {"hellaswag": "label", "winogrande": "answer", "arc_easy": "answerKey",
                     "arc_challenge": "answerKey"}
    if task_name in string_labels:
        assert isinstance(first[string_labels[task_name]], str)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_template_renders_zero_and_two_shot(registry, task_name):
    *_, answers = TASKS[task_name]
    task, evaluation, samples = plan(registry, task_name, shots=(0, 2))
    assert evaluation.origin.startswith(f"local file {HELDOUT / task_name}")
    assert len(samples) == len(task.templates) * 2 * 3
    zero_shot = {(s.template.id, s.row_id): s.prompt for s in samples if s.shots == 0}
    for sample in samples:
        where = f"{task_name}/{sample.template.id} {sample.shots}-shot row {sample.row_id}"
        assert sample.row.answer_index == answers[evaluation.ids.index(sample.row_id)], where
        assert sample.prompt == sample.prompt.rstrip(), f"{where}: prompt ends in whitespace"
        assert "{{" not in sample.prompt and "{%" not in sample.prompt, where
        assert sample.row.options and all(o and o == o.strip() for o in sample.row.options), where
        assert len(set(sample.row.options)) == len(sample.row.options), where
        # A template copying another harness's prompt keeps its spacing: lm-eval's COPA exemplars read
        # "because  he walked" (its target delimiter before a choice that starts with a space).
        copied = sample.template.tags.extra.get("source") == "lm-eval"
        for markup in ("[header]", "[title]", "[step]", "[substeps]", *(() if copied else ("  ",))):
            assert markup not in sample.prompt, f"{where}: {markup!r} left in the prompt"
            assert not any(markup in o for o in sample.row.options), f"{where}: {markup!r} left in an option"
        if sample.shots == 2:
            assert len(sample.exemplar_ids) == 2
            assert sample.prompt.endswith("\n\n" + zero_shot[(sample.template.id, sample.row_id)])
            assert sample.prompt.count("\n\n") >= 2


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_answer_text_is_the_right_row_field(registry, task_name):
    """Under the task's own options (templates without a verbaliser), the answer is the right text."""
    _, evaluation, samples = plan(registry, task_name)
    rows = dict(zip(evaluation.ids, evaluation.rows, strict=True))
    truth = {
        "copa": lambda r: r[f"choice{r['label'] + 1}"],
        "piqa": lambda r: r[f"sol{r['label'] + 1}"],
        "story_cloze": lambda r: r[f"sentence_quiz{r['answer_right_ending']}"],
        "winogrande": lambda r: r[f"option{r['answer']}"],
        "hellaswag": lambda r: r["endings"][int(r["label"])],
        "arc_easy": lambda r: dict(zip(r["choices"]["label"], r["choices"]["text"], strict=True))[r["answerKey"]],
    }
    truth["arc_challenge"] = truth["arc_easy"]
    task = registry.get(task_name)
    plain = [s for s in samples if s.template.options is None]
    assert plain
    for sample in plain:
        row = rows[sample.row_id]
        if task_name in truth:
            expected = truth[task_name](row)
            if task_name == "hellaswag":  # the WikiHow markup is stripped from endings
                expected = expected.replace("[title] ", "").replace(" [step]", "")
            assert sample.row.answer_text == expected
        else:
            assert isinstance(task.options, tuple)
            assert sample.row.answer_text == task.options[sample.row.answer_index]


# -- golden prompts ------------------------------------------------------------------------------

GOLDEN = [
    ("rte", "q_options", 0, 1, ["yes", "no"], 1,
     "Passage: Maria Lopez, who founded the bakery chain in 1994, stepped down as chief executive to spend "
     "more time with her family.\nClaim: Maria Lopez was fired from the bakery chain.\n"
     "Does the passage support the claim?\nOPTIONS:\n- yes\n- no\nAnswer:"),
    ("rte", "q_conclude", 0, 2, ["Yes", "No"], 0,
     'Here is a piece of news: "More than 2,000 volunteers planted trees along the river banks on Saturday, '
     'the city council announced."\nCan we conclude from it that "Volunteers planted trees"?'),
    ("cb", "q_true_false_neither", 0, 2, ["true", "false", "neither"], 2,
     "A: Do you think the new manager will last the year? B: I don't know. It's hard to say whether she likes "
     "the job.\nQuestion: \"she likes the job\" True, false, or neither?\nAnswer:"),
    ("anli_r2", "statement_definitely", 0, 0, ["definitely true", "possibly true", "definitely false"], 2,
     "Mount Kinabalu, in the Malaysian state of Sabah, rises to 4,095 metres and is one of the most prominent "
     "mountains in the world.\nTaking this as true, the statement \"Mount Kinabalu is less than 4,000 metres "
     "high\" is"),
    ("copa", "completion_connective", 0, 2, ["it shattered.", "I picked up the phone."], 0,
     "The woman dropped the glass on the tiles so"),
    ("copa", "instr_numbered", 2, 0, ["1", "2"], 0,
     "Premise: The man's shoes were covered in mud.\nWhich alternative is the more likely cause? Answer with 1 "
     "or 2.\n1. He walked across the field.\n2. He polished them.\nAnswer: 1\n\n"
     "Premise: I turned the radio up.\nWhich alternative is the more likely cause? Answer with 1 or 2.\n"
     "1. The song was boring.\n2. I loved the song.\nAnswer: 2\n\n"
     "Premise: The children ran indoors.\nWhich alternative is the more likely cause? Answer with 1 or 2.\n"
     "1. It started to rain.\n2. The sun came out.\nAnswer:"),
    ("hellaswag", "completion_activity", 0, 1,
     ["Paint the pan with nail polish. Let it dry overnight.", "Sell the pan online. Take clear pictures first.",
      "Rinse it with warm water. Scrub away food with a stiff brush, avoiding soap if you can.",
      "Put the pan in the freezer. Leave it there for a week."], 2,
     "Home and Garden: How to clean a cast iron pan. Let the pan cool. Hot cast iron can burn you and may crack "
     "under cold water."),
    ("piqa", "q_first_second", 0, 1, ["first", "second"], 1,
     "I want to do the following: To loosen a stuck jar lid,\nThe first idea is: put the jar in the freezer for "
     "an hour.\nThe second idea is: run the lid under hot water for a minute, then twist.\n"
     "Which idea should I go with, the first or the second?\nAnswer: the"),
    ("story_cloze", "terse_ending", 0, 1, ["Tom sold his house the next day.", "Tom's car started right away."], 1,
     "Tom's car would not start one cold morning.\nHe called his neighbour for help.\n"
     "The neighbour brought jumper cables.\nThey connected the two batteries.\nEnding:"),
    ("wsc", "completion_refers_to", 0, 1, ["someone or something else", "Joan"], 0,
     "Joan made sure to thank Susan for all the help she had given.\nHere, \"she\" refers to"),
    ("winogrande", "instr_numbered", 0, 0, ["1", "2"], 1,
     "Replace the _ in the sentence with option 1 or option 2, whichever makes sense. Reply with the option "
     "number.\n\nSentence: Sarah lent her umbrella to Emily because _ was going to walk home in the rain.\n"
     "Option 1: Sarah\nOption 2: Emily\nReply:"),
    ("wic", "statement_has", 0, 0, ["different meanings", "the same meaning"], 0,
     "We had a picnic on the bank of the river.\nShe deposited the cheque at the bank.\n"
     "In these two sentences, the word \"bank\" has"),
    ("boolq", "terse_question", 0, 1, ["no", "yes"], 0,
     "Penguin -- Penguins are a group of aquatic flightless birds. They live almost exclusively in the Southern "
     "Hemisphere; only one species, the Galapagos penguin, is found north of the Equator.\n"
     "Do penguins live in the arctic?"),
    ("arc_easy", "instr_letters", 0, 1, ["1", "2", "3", "4"], 2,
     "Answer the multiple-choice question with the label of the correct option.\n\n"
     "What is the main source of energy for Earth's water cycle?\n1. wind\n2. the Moon\n3. the Sun\n"
     "4. volcanoes\nAnswer:"),
    ("arc_challenge", "q_inline_choices", 0, 1,
     ["more foxes", "less grass", "fewer hawks", "a long drought", "more disease"], 2,
     "Which change would most likely increase the number of rabbits in a meadow? (Choices: more foxes; "
     "less grass; fewer hawks; a long drought; more disease)\nAnswer:"),
]


@pytest.mark.parametrize(("task", "template", "shots", "row", "options", "answer", "expected"), GOLDEN,
                         ids=[f"{g[0]}-{g[1]}-{g[2]}shot" for g in GOLDEN])
def test_golden_prompts(registry, task, template, shots, row, options, answer, expected):
    sample = rendered(registry, task, template, shots, row)
    assert sample.prompt == expected
    assert list(sample.row.options) == options
    assert sample.row.answer_index == answer


# -- the shared SuperGLUE exports (string labels for RTE and CB) ---------------------------------

SHARED_LABELS = {"rte": ["entailment", "not_entailment"], "cb": ["entailment", "contradiction", "neutral"]}


@needs_shared
@pytest.mark.parametrize("task_name", ["rte", "cb", "copa"])
def test_every_template_renders_on_the_shared_rows(registry, task_name):
    task, evaluation, samples = plan(registry, task_name, data_dir=SHARED_SUPERGLUE)
    assert evaluation.origin.startswith(f"local file {SHARED_SUPERGLUE / task_name}")
    assert len(samples) == len(task.templates) * len(evaluation)
    # The rows as the exports hold them; the task's `layouts:` maps RTE/CB's label strings to indices.
    rows = {str(r["idx"]): r for r in read_rows(SHARED_SUPERGLUE / task_name / "val.jsonl")}
    for sample in samples:
        label = rows[sample.row_id]["label"]
        if task_name in SHARED_LABELS:
            assert isinstance(label, str), "the shared exports spell RTE/CB labels out"
            expected = SHARED_LABELS[task_name].index(label)
        else:
            expected = label
        assert sample.row.answer_index == expected, f"{sample.template.id} row {sample.row_id}"
        assert sample.prompt == sample.prompt.rstrip()
    seen = {rows[s.row_id]["label"] for s in samples}
    assert len(seen) == (len(SHARED_LABELS[task_name]) if task_name in SHARED_LABELS else 2)
    # Few-shot exemplars come from the shared train file, answered with each template's verbaliser.
    _, _, two_shot = plan(registry, task_name, shots=(2,), data_dir=SHARED_SUPERGLUE, limit=5)
    assert len(two_shot) == len(task.templates) * 5
    assert all(len(s.exemplar_ids) == 2 and s.prompt.count("\n\n") >= 2 for s in two_shot)


@needs_shared
def test_rte_cb_copa_run_end_to_end_on_the_shared_rows(tiny_models, tmp_path, capsys, registry):
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "rte,cb,copa",
                 "--data-dir", str(SHARED_SUPERGLUE), "--limit", "8", "--shots", "0,2",
                 "--out", str(tmp_path), "--run-id", "r"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    scored = {(s["task"], s["template"], s["shots"]): s for s in record["scores"] if "group" not in s}
    expected = {(name, t.id, k) for name in ("rte", "cb", "copa") for t in registry.get(name).templates
                for k in (0, 2)}
    assert set(scored) == expected
    for score in scored.values():
        assert score["n"] == 8
        assert 0.0 <= score["metrics"]["acc"]["mean"] <= 1.0 and "acc_norm" in score["metrics"]
