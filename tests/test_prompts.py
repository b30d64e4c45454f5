"""Golden rendered prompts: zero- and k-shot, plain and chat, several templates and tasks.

These pin the exact text a model sees. A change here changes every score computed with the
template, so it must be deliberate (and the template hash changes with it).
"""

from __future__ import annotations

import pytest

from harness.chat import PLAIN
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.tasks.prompts import PromptRenderer
from harness.tasks.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def render(registry, chat_format, task_name, template_id, shots, chat="off", multiturn=True, row=0):
    config = RunConfig(tasks=task_name, templates=template_id, shots=(shots,), limit=row + 1, chat=chat,
                       fewshot_multiturn=multiturn)
    task = registry.get(task_name)
    evaluation, pool = load_task_splits(task, config)
    samples = Planner(config, chat_format).plan_task(task, evaluation, pool)
    return samples[row]


PLAIN_GOLDEN = [
    ("parity", "completion", 0, "The number 129 is"),
    ("parity", "q_options", 0, "Is 129 even or odd?\nOPTIONS:\n- even\n- odd\nAnswer:"),
    ("parity", "instr_terse", 2,
     "Label 845 as even or odd.\nLabel: odd\n\nLabel 888 as even or odd.\nLabel: even\n\n"
     "Label 129 as even or odd.\nLabel:"),
    ("add_numbers", "equation", 2, "9 + 85 = 94\n\n66 + 57 = 123\n\n9 + 12 ="),
    ("topic_lexicon", "statement", 1,
     "Sentence: The article on the front page was about the football.\n"
     "The subject of this sentence belongs to the world of sport\n\n"
     "Sentence: The article on the front page was about the elephant.\n"
     "The subject of this sentence belongs to the world of"),
    ("extract_person", "q_qa", 0,
     "Passage: Few visitors to Dublin know the story. It was Farah who organised a chess club there.\n"
     "Q: Who is the passage about?\nA:"),
]


@pytest.mark.parametrize(("task", "template", "shots", "expected"), PLAIN_GOLDEN)
def test_plain_prompts_are_golden(registry, task, template, shots, expected):
    assert render(registry, PLAIN, task, template, shots).prompt == expected


def test_template_verbaliser_replaces_task_options(registry):
    sample = render(registry, PLAIN, "topic_lexicon", "statement", 0)
    assert sample.row.options == ("sport", "cooking", "wildlife")
    assert sample.row.answer_index == 2
    assert sample.row.answer_text == "wildlife"


def test_generate_row_references(registry):
    sample = render(registry, PLAIN, "extract_person", "q_qa", 0)
    assert sample.row.references == ("Farah",)
    assert sample.row.options is None


CHAT_GOLDEN = [
    ("parity", "completion", 0, True, "<s><|user|>\nThe number 129 is\n<|assistant|>\n"),
    ("parity", "instr_terse", 2, True,
     "<s><|user|>\nLabel 845 as even or odd.\nLabel:\n<|assistant|>\nodd</s>\n"
     "<|user|>\nLabel 888 as even or odd.\nLabel:\n<|assistant|>\neven</s>\n"
     "<|user|>\nLabel 129 as even or odd.\nLabel:\n<|assistant|>\n"),
    ("add_numbers", "equation", 2, False,
     "<s><|user|>\n9 + 85 = 94\n\n66 + 57 = 123\n\n9 + 12 =\n<|assistant|>\n"),
]


@pytest.mark.parametrize(("task", "template", "shots", "multiturn", "expected"), CHAT_GOLDEN)
def test_chat_prompts_are_golden(registry, chat_backend, task, template, shots, multiturn, expected):
    sample = render(registry, chat_backend.chat_format, task, template, shots, chat="on", multiturn=multiturn)
    assert sample.prompt == expected


def test_chat_drops_target_delimiter_like_lm_eval(registry, chat_backend):
    config = RunConfig(tasks="parity", chat="on")
    planner = Planner(config, chat_backend.chat_format)
    task = registry.get("parity")
    assert planner.continuation_prefix(task, task.template("completion")) == ""
    plain = Planner(RunConfig(tasks="parity", chat="off"), chat_backend.chat_format)
    assert plain.continuation_prefix(task, task.template("completion")) == " "


def test_chat_auto_follows_the_tokenizer(plain_backend, chat_backend):
    assert Planner(RunConfig(chat="auto"), chat_backend.chat_format).chat is True
    assert Planner(RunConfig(chat="auto"), plain_backend.chat_format).chat is False
    with pytest.raises(HarnessError, match="has no chat template"):
        Planner(RunConfig(chat="on"), plain_backend.chat_format)


def test_exemplars_never_include_the_evaluated_row(registry):
    task = registry.get("parity")
    config = RunConfig(tasks="parity", shots=(5,), limit=30)
    evaluation, _ = load_task_splits(task, config)
    # Draw exemplars from the evaluation split itself: the row being scored must never be one of them.
    from harness.tasks.rows import FewshotSampler

    sampler = FewshotSampler(evaluation, seed=1, same_split_as_eval=True)
    for row_id in evaluation.ids:
        drawn = [i for i, _ in sampler.sample(row_id, 5)]
        assert row_id not in drawn and len(set(drawn)) == 5
    # Draws nest: the 1-shot exemplar is the first of the 5-shot ones, and depend only on the seed.
    assert sampler.sample("3", 1)[0][0] == sampler.sample("3", 5)[0][0]
    assert sampler.sample("3", 5) == FewshotSampler(evaluation, 1, True).sample("3", 5)
    assert sampler.sample("3", 5) != FewshotSampler(evaluation, 2, True).sample("3", 5)
    # first_n: the pool's first k rows for every row, skipping the evaluated one, whatever the seed.
    fixed = FewshotSampler(evaluation, seed=1, same_split_as_eval=True, first_n=True)
    first = list(evaluation.ids[:6])
    assert [i for i, _ in fixed.sample("25", 5)] == first[:5]
    assert [i for i, _ in fixed.sample(first[2], 5)] == first[:2] + first[3:6]
    assert fixed.sample("25", 5) == FewshotSampler(evaluation, 7, True, first_n=True).sample("25", 5)


def test_first_n_tasks_give_every_row_the_same_preamble(registry):
    import dataclasses

    task = registry.get("parity")
    fixed = dataclasses.replace(task, data=dataclasses.replace(task.data, fewshot_sampler="first_n"))
    config = RunConfig(tasks="parity", templates="instr_terse", shots=(2,), limit=5)
    evaluation, pool = load_task_splits(fixed, config)
    samples = Planner(config, PLAIN).plan_task(fixed, evaluation, pool)
    assert {s.exemplar_ids for s in samples} == {tuple(pool.ids[:2])}
    assert samples[0].prompt == ("Label 716 as even or odd.\nLabel: even\n\nLabel 602 as even or odd.\nLabel: even\n\n"
                                 "Label 129 as even or odd.\nLabel:")
    assert samples[3].prompt.startswith("Label 716 as even or odd.\nLabel: even\n\nLabel 602 as even or odd.\n")


def test_template_reading_a_missing_field_fails_before_inference(registry, tmp_path):
    task = registry.get("parity")
    with pytest.raises(HarnessError, match=r"uses field 'number', missing from"):
        PromptRenderer().check_fields(task, ["idx", "label"], "local files")


def test_row_that_breaks_a_template_names_row_and_file(registry):
    task = registry.get("parity")
    template = task.template("q_options")
    with pytest.raises(HarnessError, match=r"q_options.yaml: row 7 of task 'parity': .*'number'"):
        PromptRenderer().render_row(task, template, {"label": 0}, "7")
    with pytest.raises(HarnessError, match=r"answer index 5 is outside the 2 options"):
        PromptRenderer().render_row(task, template, {"number": 3, "label": 5}, "8")
