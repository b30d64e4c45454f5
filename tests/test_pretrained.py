"""The built-in base and tuned models: pretraining on the local corpus, tuning with held-out clusters
and templates, caching, and the default `harness run` that compares them.

The real recipe takes a few CPU minutes and is exercised by the README's main command; these tests
run the same code on a miniature recipe (a few steps of a very small model)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.benchmarks.suite import TOPIC_KEYWORDS
from harness.builtin import pretrained
from harness.builtin.corpus import corpus_documents
from harness.seen import read_manifest
from harness.tasks.registry import Registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MINI = replace(pretrained.DEFAULT_RECIPE, hidden_size=32, num_layers=2, num_heads=2, vocab_size=600,
               corpus_documents=64, tokenizer_documents=16, pretrain_steps=3, tune_steps=3, batch_size=4,
               max_length=1024)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE", str(tmp_path_factory.mktemp("pretrained-cache")))
        stages = []
        models = pretrained.builtin_pair(MINI, stage=lambda message, steps: stages.append((message, steps)))
        again = pretrained.builtin_pair(MINI, stage=lambda message, steps: stages.append((message, steps)))
    assert again == models, "a second call finds the cached models"
    assert [steps for _, steps in stages] == [3, 3], "each model is trained once, base first"
    assert stages[0][0].startswith("pretraining tiny-base on 64 local documents")
    return models


def test_corpus_is_deterministic_prose_without_instructions():
    documents = corpus_documents(200, seed=0)
    assert documents == corpus_documents(200, seed=0) and documents != corpus_documents(200, seed=1)
    text = " ".join(documents)
    assert "?" not in text and "Answer:" not in text and "Options" not in text
    assert any(keyword in text for keyword in TOPIC_KEYWORDS[0])


def test_base_is_a_loadable_untuned_model_and_tuned_records_what_it_saw(pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in pair.values():
        AutoModelForCausalLM.from_pretrained(path)
        assert AutoTokenizer.from_pretrained(path).chat_template is None
    assert read_manifest(pair["tiny-base"]) is None
    manifest = read_manifest(pair["tiny-flan"])
    assert manifest.base_model == str(pair["tiny-base"])
    assert manifest.held_out_clusters == ("list_operations",)
    assert manifest.trained_steps == 3
    registry = Registry()
    for task in manifest.tasks:
        assert len(registry.tasks[task.name].templates) - len(task.templates) == 2, task.name
    assert {t.cluster for t in manifest.tasks} == {"arithmetic", "comparison", "extraction",
                                                   "lexicon_classification", "string_transform"}


def test_a_changed_recipe_builds_elsewhere(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(Path(pair["tiny-base"]).parents[1]))
    registry = Registry()
    assert pretrained.base_path(MINI) == pair["tiny-base"]
    assert pretrained.tuned_path(registry, MINI) == pair["tiny-flan"]
    other = replace(MINI, tune_steps=4)
    assert pretrained.base_path(other) == pair["tiny-base"], "the base does not depend on the tuning"
    assert pretrained.tuned_path(registry, other) != pair["tiny-flan"]


def test_default_run_compares_the_built_in_pair_by_seen_status(pair, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(Path(pair["tiny-base"]).parents[1]))
    monkeypatch.setattr(pretrained, "DEFAULT_RECIPE", MINI)
    assert main(["run", "--tasks", "parity,list_max", "--limit", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Generalization" in out and "held out cluster" in out and "held out template" in out
    records = {json.loads(p.read_text())["model"]["model"]: json.loads(p.read_text())
               for p in tmp_path.glob("*/run.json")}
    assert set(records) == {str(pair["tiny-base"]), str(pair["tiny-flan"])}
    tuned = records[str(pair["tiny-flan"])]
    statuses = {(s["task"], s["seen_status"]) for s in tuned["scores"]}
    assert ("list_max", "held_out_cluster") in statuses and ("parity", "held_out_template") in statuses
