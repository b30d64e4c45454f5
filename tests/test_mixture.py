"""The FLAN-style mixture: seeded and deterministic, examples-proportional, held-out clusters with
their related ones, and every example exactly what evaluation shows and scores for the same row."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from harness.chat import PLAIN, ChatFormat
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner
from harness.tasks.registry import Registry
from harness.tasks.rows import load_split
from harness.tune.mixture import (
    MixtureConfig,
    allocate,
    build_mixture,
    mixture_table,
)

HELDOUT = Path(__file__).resolve().parent / "data" / "heldout"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def chat_template(tiny_models):
    from transformers import AutoTokenizer

    return ChatFormat.from_tokenizer(AutoTokenizer.from_pretrained(tiny_models["tiny-llama-chat"]))


def write_task(root: Path, name: str, cluster: str, rows: int, related: tuple[str, ...] = ()) -> None:
    """A choice task with a train and a test split of `rows` rows and two templates (options shown or not)."""
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "templates" / name).mkdir(parents=True, exist_ok=True)
    related_line = f"related_clusters: [{', '.join(related)}]\n" if related else ""
    (root / "tasks" / f"{name}.yaml").write_text(
        f"name: {name}\ncluster: {cluster}\n{related_line}kind: choice\n"
        f"data:\n  files: {{test: {name}_test.jsonl, train: {name}_train.jsonl}}\n"
        "  eval_split: test\n  fewshot_split: train\n"
        'options: ["no", "yes"]\nanswer: label\nmetrics: [acc]\n'
        f"templates: {name}\n"
    )
    for split in ("test", "train"):
        lines = [json.dumps({"text": f"{split} row {i}", "label": i % 2}) for i in range(rows)]
        (root / "tasks" / f"{name}_{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "templates" / name / "plain.yaml").write_text(
        'prompt: "Is {{ text }} true?"\ntags: {options: false, style: question}\n')
    (root / "templates" / name / "listed.yaml").write_text(
        'prompt: "{{ text }}\\nOPTIONS: {{ options | join(\', \') }}"\ntags: {options: true, style: instruction}\n')


@pytest.fixture(scope="module")
def user_registry(tmp_path_factory) -> Registry:
    root = tmp_path_factory.mktemp("mixture-tasks")
    write_task(root, "entail", "nli_user", 5, related=("paraphrase_user",))
    write_task(root, "para", "paraphrase_user", 12)
    write_task(root, "topic", "topics_user", 50)
    return Registry([root / "tasks"])


def test_same_seed_same_mixture_other_seed_other_mixture(registry):
    config = MixtureConfig(examples_per_task_cap=10, seed=3)
    first, again = build_mixture(registry, config, PLAIN), build_mixture(registry, config, PLAIN)
    assert first.examples == again.examples and first.hash == again.hash and len(first.hash) == 64
    other = build_mixture(registry, MixtureConfig(examples_per_task_cap=10, seed=4), PLAIN)
    assert other.hash != first.hash
    assert [e.task for e in first.examples] != sorted(e.task for e in first.examples), "examples are shuffled"


def test_counts_are_min_of_rows_and_cap_and_scale_to_a_total(user_registry):
    mixture = build_mixture(user_registry, MixtureConfig(tasks="entail,para,topic", examples_per_task_cap=20), PLAIN)
    assert mixture.task_counts() == {"entail": 5, "para": 12, "topic": 20}
    assert mixture.cluster_counts() == {"nli_user": 5, "paraphrase_user": 12, "topics_user": 20}
    assert Counter(e.task for e in mixture.examples) == Counter(mixture.task_counts())
    # Each row at most once while the cap is below the split size.
    topic_rows = [e.row_id for e in mixture.examples if e.task == "topic"]
    assert len(set(topic_rows)) == 20
    scaled = build_mixture(user_registry, MixtureConfig(tasks="entail,para,topic", examples_per_task_cap=20,
                                                        total_examples=74), PLAIN)
    assert scaled.task_counts() == {"entail": 10, "para": 24, "topic": 40}
    assert allocate({"a": 5, "b": 12, "c": 50}, 20, 10) == {"a": 1, "b": 3, "c": 6}
    assert sum(allocate({"a": 3, "b": 3, "c": 3}, 20, 10).values()) == 10


def test_held_out_cluster_goes_with_its_related_clusters(user_registry):
    config = MixtureConfig(tasks="entail,para,topic", held_out_clusters=("paraphrase_user",))
    mixture = build_mixture(user_registry, config, PLAIN)
    assert mixture.held_out_requested == ("paraphrase_user",)
    assert mixture.held_out_clusters == ("nli_user", "paraphrase_user")
    assert mixture.task_counts() == {"topic": 50}
    assert {e.task for e in mixture.examples} == {"topic"}
    assert {(name, why) for name, _, why in mixture.excluded} == {("entail", "held out"), ("para", "held out")}


def test_builtin_held_out_tasks_train_on_their_train_split(registry):
    config = MixtureConfig(tasks="rte,cb,copa", held_out_clusters=("nli",), data_dirs=(str(HELDOUT),), max_shots=5)
    mixture = build_mixture(registry, config, PLAIN)
    assert mixture.held_out_clusters == ("nli", "paraphrase")
    assert mixture.task_counts() == {"copa": 3}
    assert mixture.tasks[0].split == "train"
    assert all(e.shots <= 2 for e in mixture.examples), "3 training rows allow at most 2 exemplars"


@pytest.mark.parametrize(("config", "message"), [
    (MixtureConfig(tasks="entail,para", held_out_clusters=("nli_user",)), "no task left to train on"),
    (MixtureConfig(tasks="topic", held_out_clusters=("nope",)), "unknown held-out cluster 'nope'"),
    (MixtureConfig(tasks="topic", chat=True), "no chat template"),
])
def test_mixture_errors_are_one_line(user_registry, config, message):
    with pytest.raises(HarnessError, match=message) as error:
        build_mixture(user_registry, config, PLAIN)
    assert "\n" not in str(error.value)


def test_bad_config_is_refused():
    with pytest.raises(HarnessError, match="fewshot_fraction must be in"):
        MixtureConfig(fewshot_fraction=1.5)
    with pytest.raises(HarnessError, match="examples_per_task_cap must be at least 1"):
        MixtureConfig(examples_per_task_cap=0)


def test_fewshot_and_options_fractions_on_a_big_mixture(registry):
    choice = "comparison,lexicon_classification,parity"
    mixture = build_mixture(registry, MixtureConfig(tasks=choice, fewshot_fraction=0.3, options_fraction=0.8,
                                                    max_shots=4, seed=7), PLAIN)
    assert len(mixture.examples) == 5 * 2000  # the tune split of each task
    fewshot = [e for e in mixture.examples if e.shots > 0]
    assert abs(len(fewshot) / len(mixture.examples) - 0.3) < 0.06
    assert {e.shots for e in fewshot} == {1, 2, 3, 4}
    shown = sum(e.options_shown for e in mixture.examples) / len(mixture.examples)
    assert abs(shown - 0.8) < 0.06
    natural = build_mixture(registry, MixtureConfig(tasks=choice, seed=7), PLAIN)
    # The natural mix draws templates uniformly: these tasks list the options in 15 of 30 templates.
    assert abs(sum(e.options_shown for e in natural.examples) / len(natural.examples) - 0.5) < 0.07
    assert abs(sum(e.shots > 0 for e in natural.examples) / len(natural.examples) - 0.5) < 0.07


GOLDEN = dict(task="compare_numbers", cluster="comparison", template_id="q_options", template_hash="e969f3e25f341999",
              shots=2, options_shown=True, turned_around=False, row_id="1130")
GOLDEN_PLAIN = (
    "Which number is larger?\nOPTIONS:\n- 427\n- 163\nAnswer: 427\n\n"
    "Which number is larger?\nOPTIONS:\n- 411\n- 104\nAnswer: 411\n\n"
    "Which number is larger?\nOPTIONS:\n- 910\n- 317\nAnswer:"
)
GOLDEN_CHAT = (
    "<s><|user|>\nWhich number is larger?\nOPTIONS:\n- 427\n- 163\nAnswer:\n<|assistant|>\n427</s>\n"
    "<|user|>\nWhich number is larger?\nOPTIONS:\n- 411\n- 104\nAnswer:\n<|assistant|>\n411</s>\n"
    "<|user|>\nWhich number is larger?\nOPTIONS:\n- 910\n- 317\nAnswer:\n<|assistant|>\n"
)


@pytest.mark.parametrize("chat", [False, True])
def test_golden_training_example(registry, chat_template, chat):
    config = MixtureConfig(tasks="compare_numbers", examples_per_task_cap=3, max_shots=2, chat=chat, seed=0)
    mixture = build_mixture(registry, config, chat_template if chat else PLAIN)
    example = mixture.examples[0]
    assert {k: getattr(example, k) for k in GOLDEN} == GOLDEN
    assert example.prompt == (GOLDEN_CHAT if chat else GOLDEN_PLAIN)
    assert example.completion == ("910" if chat else " 910")


@pytest.mark.parametrize("chat", [False, True])
def test_every_example_is_what_evaluation_shows_and_scores(registry, chat_template, chat):
    """Re-plan each example's row with the Planner on the whole training split (as evaluation would
    plan it) and compare: same prompt, and the completion is the scored continuation of the answer."""
    config = MixtureConfig(tasks="parity,compare_length,list_max", examples_per_task_cap=12, chat=chat, seed=5)
    mixture = build_mixture(registry, config, chat_template if chat else PLAIN)
    chat_format = chat_template if chat else PLAIN
    splits = {name: load_split(registry.get(name), registry.get(name).data.tuning_split)
              for name in {e.task for e in mixture.examples}}
    for example in mixture.examples:
        task, split = registry.get(example.task), splits[example.task]
        planner = Planner(RunConfig(tasks=task.name, shots=(example.shots,), templates=example.template_id, seed=5,
                                    chat="on" if chat else "off"), chat_format)
        # The row alone, with the whole split as the exemplar pool, as evaluation plans each row.
        position = split.ids.index(example.row_id)
        row = replace(split, rows=split.rows[position:position + 1], ids=split.ids[position:position + 1])
        (sample,) = planner.plan_task(task, row, split)
        prefix = planner.continuation_prefix(task, sample.template)
        assert example.prompt == sample.prompt
        if task.kind == "choice":
            assert example.completion == prefix + sample.row.options[sample.row.answer_index]
        else:
            assert example.completion == prefix + sample.row.references[0]
        assert example.template_hash == sample.template.hash
        assert example.options_shown == sample.template.tags.options


def test_table_shows_tasks_shares_and_held_out_clusters(user_registry):
    mixture = build_mixture(user_registry, MixtureConfig(tasks="entail,para,topic", fewshot_fraction=0.0,
                                                         options_fraction=1.0, held_out_clusters=("nli_user",)), PLAIN)
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(mixture_table(mixture))
    text = console.export_text()
    assert "held-out clusters (with related ones): nli_user, paraphrase_user" in text
    topic_line = next(line for line in text.splitlines() if "topic" in line and "topics_user" in line)
    assert [cell.strip() for cell in topic_line.split("│")[3:8]] == ["50", "1", "100%", "0%", "100%"]
    assert any("entail" in line and "held out" in line for line in text.splitlines())


def test_suite_tasks_tune_on_their_own_split_and_keep_their_few_shot_pool(registry):
    task = registry.tasks["parity"]
    assert (task.data.fewshot_split, task.data.train_split, task.data.tuning_split) == ("train", "tune", "tune")
    mixture = build_mixture(registry, MixtureConfig(tasks="parity", examples_per_task_cap=3000), PLAIN)
    assert mixture.tasks[0].split == "tune" and mixture.task_counts() == {"parity": 2000}
    pool = {row["idx"] for row in load_split(task, "train", None).rows}
    assert len(pool) == 64, "the few-shot pool (and so every few-shot prompt) is unchanged by the tuning split"


def test_held_out_templates_are_seeded_per_task_and_never_trained(registry):
    config = MixtureConfig(tasks="parity,list_first", examples_per_task_cap=60, held_out_templates=2, seed=5)
    mixture = build_mixture(registry, config, PLAIN)
    for record in mixture.tasks:
        all_ids = {t.id for t in registry.tasks[record.name].templates}
        trained = {t.id for t in record.templates}
        assert len(all_ids - trained) == 2, record.name
        assert {e.template_id for e in mixture.examples if e.task == record.name} == trained
    again = build_mixture(registry, config, PLAIN)
    assert [t.templates for t in again.tasks] == [t.templates for t in mixture.tasks]
    with pytest.raises(HarnessError, match="held_out_templates=6 leaves task 'parity' no template"):
        build_mixture(registry, MixtureConfig(tasks="parity", held_out_templates=6), PLAIN)
