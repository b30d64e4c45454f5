"""Parity with lm-eval 0.4.13's `hf` backend on the built-in tiny Llama (CPU, float32, offline).

The harness claims that its scores are lm-eval's scores for the same prompt. These tests hold it to
that: the harness runs a task, its samples are handed to lm-eval as a local JSONL task, and both
must agree on every sample:

- choice scoring: the harness's exact prompts (0-shot and k-shot, every template) scored by both:
  per-option log-likelihoods within 1e-4, the same continuation strings (target delimiter
  included), the same argmax, is_greedy, acc and acc_norm;
- generation: the same greedy strings from the same prompts (different batch sizes on each side);
- few-shot layout: lm-eval assembles the context itself from the harness's rendered exemplars
  (plain, chat with multi-turn exemplars, chat with one collapsed user turn) and must arrive at
  the harness's prompt character for character, then at the same scores;
- rendering: lm-eval renders the template's own Jinja source over the original rows and must
  produce the harness's prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("accelerate", reason="lm-eval's hf backend needs accelerate, which is not installed")
pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval (lm_eval.models.huggingface) is not importable")

import numpy as np  # noqa: E402

from harness.engine import HFBackend  # noqa: E402
from harness.eval.config import RunConfig  # noqa: E402
from harness.eval.run import run  # noqa: E402
from harness.tasks.prompts import PromptRenderer  # noqa: E402
from harness.tasks.registry import Registry  # noqa: E402
from harness.tasks.rows import load_split  # noqa: E402
from harness.tasks.schema import Task, Template  # noqa: E402
from tests import lm_eval_bridge as bridge  # noqa: E402

ATOL = 1e-4
SEED = 1234
LM_EVAL_BATCH = 8  # lm-eval batches by request count; the harness by a 4096-token budget


# -- fixtures ---------------------------------------------------------------------------------------


# `tiny_models` (tests/conftest.py): the built-in tiny models, built once per session into a
# private HARNESS_CACHE under tmp_path_factory, so the user's ~/.cache is never touched.


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backends(tiny_models: dict[str, Path]) -> dict[str, HFBackend]:
    return {name: HFBackend(str(path), dtype="float32", device="cpu", batch_tokens=4096)
            for name, path in tiny_models.items()}


@pytest.fixture(scope="module")
def hflms(tiny_models: dict[str, Path]) -> dict[str, Any]:
    return {name: bridge.make_hflm(path, LM_EVAL_BATCH) for name, path in tiny_models.items()}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


# -- helpers ----------------------------------------------------------------------------------------


def harness_samples(backend: HFBackend, registry: Registry, out: Path, **config: Any) -> list[dict[str, Any]]:
    """Run the harness and return its samples in plan order (template, shots, row)."""
    run_dir, record = run(RunConfig(seed=SEED, **config), backend, registry, out=out)
    with (run_dir / "samples.jsonl").open(encoding="utf-8") as handle:
        samples = [json.loads(line) for line in handle]
    assert len(samples) == record.counts["samples"] > 0
    return sorted(samples, key=lambda s: (s["template"], s["shots"], int(s["row_id"])))


def group(samples: list[dict[str, Any]], *fields: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sample[f] for f in fields), []).append(sample)
    return groups


def delimiter(task: Task, template: Template) -> str:
    return template.target_delimiter if template.target_delimiter is not None else task.target_delimiter


def assert_choice_parity(samples: list[dict[str, Any]], logged: list[dict[str, Any]]) -> float:
    """Same context, continuations, log-likelihoods, choice and metrics; returns the largest |diff|."""
    assert len(samples) == len(logged)
    largest = 0.0
    for sample, theirs in zip(samples, logged, strict=True):
        where = sample["key"]
        assert bridge.context(theirs) == sample["prompt"], where
        assert bridge.continuations(theirs) == [sample["continuation_prefix"] + o for o in sample["options"]], where
        assert theirs["target"] == sample["answer_index"], where
        ours_ll, theirs_ll = np.asarray(sample["logprobs"]), np.asarray(bridge.loglikelihoods(theirs))
        diff = float(np.max(np.abs(ours_ll - theirs_ll)))
        assert diff <= ATOL, f"{where}: log-likelihoods {ours_ll.tolist()} vs lm-eval {theirs_ll.tolist()}"
        largest = max(largest, diff)
        assert int(np.argmax(ours_ll)) == int(np.argmax(theirs_ll)), where
        assert sample["is_greedy"] == bridge.greedy_flags(theirs), where
        assert theirs["acc"] == sample["metrics"]["acc"], where
        assert theirs["acc_norm"] == sample["metrics"]["acc_norm"], where
    return largest


def assert_generate_parity(samples: list[dict[str, Any]], logged: list[dict[str, Any]]) -> None:
    """Same context and the same generated string for every sample."""
    assert len(samples) == len(logged)
    mismatches = []
    for sample, theirs in zip(samples, logged, strict=True):
        assert bridge.context(theirs) == sample["prompt"], sample["key"]
        if bridge.generation(theirs) != sample["response"]:
            mismatches.append((sample["key"], sample["response"], bridge.generation(theirs)))
    assert not mismatches, mismatches
    assert any(s["response"].strip() for s in samples), "every response is empty; the test would be vacuous"


# -- 1. choice scoring of the harness's own prompts --------------------------------------------------


@pytest.mark.parametrize("task_name", ["compare_numbers", "compare_length", "parity"])
def test_choice_scores_match_lm_eval(task_name, backends, hflms, registry, tmp_path):
    """Plain prompts, 0- and 3-shot, every template: lm-eval scores the harness's exact contexts."""
    samples = harness_samples(backends["tiny-llama"], registry, tmp_path / "runs", tasks=task_name,
                              shots=(0, 3), limit=8, chat="off")
    groups = group(samples, "template", "shots")
    assert len({template for template, _ in groups}) >= 5, "expected the task's several templates"
    names = {}
    for (template, shots), members in groups.items():
        name = f"choice_{template}_{shots}"
        prefixes = {s["continuation_prefix"] for s in members}
        assert len(prefixes) == 1
        rows = [{"prompt": s["prompt"], "choices": s["options"], "label": s["answer_index"]} for s in members]
        bridge.write_task(tmp_path / "lm_eval", name, rows, bridge.choice_config(prefixes.pop()))
        names[name] = members
    logged = bridge.evaluate(hflms["tiny-llama"], tmp_path / "lm_eval", list(names))
    for name, members in names.items():
        assert_choice_parity(members, logged[name])


# -- 2. greedy generation from the harness's own prompts ---------------------------------------------


@pytest.mark.parametrize("task_name", ["add_numbers", "extract_person"])
def test_generations_match_lm_eval(task_name, backends, hflms, registry, tmp_path):
    """Plain prompts, 0- and 2-shot, every template: the same greedy strings.

    The two sides batch differently (harness: a token budget; lm-eval: LM_EVAL_BATCH requests,
    longest first), so rows are left-padded differently; with float32 that moves logits by ~1e-6.
    No greedy choice on these rows is that close: with 20 rows per task, lm-eval batch sizes 1, 3,
    16 and 64 and harness budgets of 64 and 4096 tokens all gave identical strings.
    """
    task = registry.get(task_name)
    samples = harness_samples(backends["tiny-llama"], registry, tmp_path / "runs", tasks=task_name,
                              shots=(0, 2), limit=6, chat="off")
    rows = [{"prompt": s["prompt"], "reference": s["references"][0]} for s in samples]
    config = bridge.generate_config(task.generation.stop, task.generation.max_new_tokens)
    bridge.write_task(tmp_path / "lm_eval", "generate", rows, config)
    logged = bridge.evaluate(hflms["tiny-llama"], tmp_path / "lm_eval", ["generate"])["generate"]
    assert_generate_parity(samples, logged)


# -- 3. the few-shot layout, plain and through the chat template -------------------------------------


def layout_tasks(task: Task, samples: list[dict[str, Any]], limit: int, directory: Path) -> dict[str, list]:
    """Write one lm-eval task per (template, shots) whose rows are the harness's rendered rows.

    Each doc carries the query as the template renders it and, for k-shot, the exemplars the
    harness drew for that row, rendered by the same template (`exemplars`, handed to lm-eval by
    `lm_eval_bridge.UTILS_SOURCE`'s sampler in the harness's order). lm-eval's `fewshot_context`
    then assembles the context itself: `prompt + target_delimiter + answer + fewshot_delimiter`
    per exemplar, or chat messages through the tokenizer's chat template. Returns name -> samples.
    """
    renderer = PromptRenderer()
    templates = {t.id: t for t in task.templates}
    evaluation = load_split(task, task.data.eval_split, limit)
    pool = load_split(task, task.data.fewshot_split)
    eval_rows = dict(zip(evaluation.ids, evaluation.rows, strict=True))
    pool_rows = dict(zip(pool.ids, pool.rows, strict=True))

    def as_doc(template: Template, row: dict[str, Any], row_id: str) -> dict[str, Any]:
        rendered = renderer.render_row(task, template, row, row_id)
        if task.kind == "choice":
            return {"prompt": rendered.prompt, "choices": list(rendered.options), "label": rendered.answer_index}
        return {"prompt": rendered.prompt, "reference": rendered.references[0]}

    names = {}
    for (template_id, shots), members in group(samples, "template", "shots").items():
        template = templates[template_id]
        rows = []
        for sample in members:
            doc = as_doc(template, eval_rows[sample["row_id"]], sample["row_id"])
            if task.kind == "choice":
                assert doc["choices"] == sample["options"] and doc["label"] == sample["answer_index"]
            assert len(sample["exemplars"]) == shots
            if shots:
                doc["exemplars"] = [as_doc(template, pool_rows[i], i) for i in sample["exemplars"]]
            rows.append(doc)
        if task.kind == "choice":
            config = bridge.choice_config(delimiter(task, template), task.fewshot_delimiter)
        else:
            config = bridge.generate_config(task.generation.stop, task.generation.max_new_tokens,
                                            delimiter(task, template), task.fewshot_delimiter)
        name = f"layout_{template_id}_{shots}"
        bridge.write_task(directory, name, rows, bridge.with_exemplars(config, shots))
        names[name] = members
    return names


LAYOUTS = {
    # id: (model, harness chat mode, harness fewshot_multiturn, lm-eval apply_chat_template)
    "plain": ("tiny-llama", "off", True, False),
    "chat-multiturn": ("tiny-llama-chat", "on", True, True),
    "chat-single-turn": ("tiny-llama-chat", "on", False, True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fewshot_layout_matches_lm_eval(layout, backends, hflms, registry, tmp_path):
    """lm-eval builds each 0/3-shot context from the harness's exemplars and must reproduce its prompt.

    Chat layouts apply the tokenizer's chat template on both sides, with lm-eval's
    `fewshot_as_multiturn` equal to the harness's `fewshot_multiturn`. Under a chat template
    lm-eval scores options with no target delimiter, and so must the harness (continuation_prefix "").
    """
    model, chat, multiturn, apply_chat = LAYOUTS[layout]
    task = registry.get("compare_length")
    chosen = "instr_position,q_options"  # its own options list; a for-loop over the options
    samples = harness_samples(backends[model], registry, tmp_path / "runs", tasks=task.name, shots=(0, 3),
                              templates=chosen, limit=6, chat=chat, fewshot_multiturn=multiturn)
    if apply_chat:
        assert all(s["continuation_prefix"] == "" for s in samples)
        assert all(s["prompt"].startswith("<s><|user|>\n") for s in samples)
    names = layout_tasks(task, samples, 6, tmp_path / "lm_eval")
    logged = bridge.evaluate(hflms[model], tmp_path / "lm_eval", list(names),
                             apply_chat_template=apply_chat, fewshot_as_multiturn=multiturn)
    for name, members in names.items():
        assert_choice_parity(members, logged[name])


def test_chat_generations_match_lm_eval(backends, hflms, registry, tmp_path):
    """Chat template, multi-turn exemplars, 0- and 2-shot: the same context and greedy strings."""
    task = registry.get("extract_person")
    samples = harness_samples(backends["tiny-llama-chat"], registry, tmp_path / "runs", tasks=task.name,
                              shots=(0, 2), templates="instr_terse,q_qa", limit=4, chat="on")
    names = layout_tasks(task, samples, 4, tmp_path / "lm_eval")
    logged = bridge.evaluate(hflms["tiny-llama-chat"], tmp_path / "lm_eval", list(names),
                             apply_chat_template=True, fewshot_as_multiturn=True)
    for name, members in names.items():
        assert_generate_parity(members, logged[name])


# -- 4. rendering: lm-eval renders the template's Jinja source itself --------------------------------

# Every template of these tasks uses only row fields, `options`, the `join` filter and a for-loop,
# all of which lm-eval's Jinja environment (StrictUndefined, keep_trailing_newline, no trim_blocks
# or lstrip_blocks, like the harness's) renders the same way, so none needs skipping.
RENDER_TASKS = ["compare_numbers", "parity"]


@pytest.mark.parametrize("task_name", RENDER_TASKS)
def test_template_rendering_matches_lm_eval(task_name, backends, hflms, registry, tmp_path):
    """0-shot plain: doc_to_text is the template's own source over the original rows."""
    task = registry.get(task_name)
    samples = harness_samples(backends["tiny-llama"], registry, tmp_path / "runs", tasks=task_name,
                              shots=(0,), limit=6, chat="off")
    evaluation = load_split(task, task.data.eval_split, 6)
    rows = dict(zip(evaluation.ids, evaluation.rows, strict=True))
    names = {}
    for template in task.templates:
        members = [s for s in samples if s["template"] == template.id]
        assert members
        docs = []
        for sample in members:
            row = rows[sample["row_id"]]
            assert "options" not in row and "answer_index" not in row, "row fields would shadow ours"
            docs.append({**row, "options": sample["options"], "answer_index": sample["answer_index"]})
        config = {
            "output_type": "multiple_choice",
            "doc_to_text": template.prompt,  # the template's Jinja source, rendered by lm-eval
            "doc_to_choice": "options",  # a feature name: lm-eval returns the list as is
            "doc_to_target": "answer_index",
            "target_delimiter": delimiter(task, template),
            "metric_list": bridge.ACC_METRICS,
        }
        name = f"render_{template.id}"
        bridge.write_task(tmp_path / "lm_eval", name, docs, config)
        names[name] = members
    logged = bridge.evaluate(hflms["tiny-llama"], tmp_path / "lm_eval", list(names))
    for name, members in names.items():
        assert_choice_parity(members, logged[name])
