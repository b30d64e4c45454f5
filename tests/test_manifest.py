"""The training manifest: round trip, the four seen/held-out labels, one-line errors on bad files."""

from __future__ import annotations

import json

import pytest

from harness.errors import HarnessError
from harness.seen import MANIFEST_FILE, TaskRecord, TemplateRecord, TrainingManifest, read_manifest, seen_status
from harness.tasks.registry import Registry
from harness.tune.manifest import manifest_from_mixture, write_manifest
from harness.tune.mixture import MixtureConfig, build_mixture


def hand_made() -> TrainingManifest:
    templates = (TemplateRecord("q_options", "aaaa", True, False, {0: 3, 2: 1}),
                 TemplateRecord("statement", "bbbb", False, False, {0: 2}))
    return TrainingManifest(
        base_model="tiny-llama", base_weights_hash="0123", mixture_hash="f" * 64, mixture_config={"seed": 0},
        tasks=(TaskRecord("compare_numbers", "comparison", "cccc", "train", 64, 6, templates),),
        held_out_requested=("nli",), held_out_clusters=("nli", "paraphrase"), seeds={"mixture": 0},
        hyperparameters={"lr": 1e-4}, created="2025-01-01T00:00:00Z",
    )


def test_manifest_of_a_mixture_round_trips(tmp_path):
    mixture = build_mixture(Registry(), MixtureConfig(tasks="parity,add_numbers", examples_per_task_cap=8,
                                                      held_out_clusters=("comparison",)))
    manifest = manifest_from_mixture(mixture, "tiny-llama", "abcd", {"lr": 2e-5, "betas": [0.9, 0.95]},
                                     {"trainer": 11})
    path = write_manifest(tmp_path / "ckpt", manifest)
    assert path == tmp_path / "ckpt" / MANIFEST_FILE
    assert read_manifest(tmp_path / "ckpt") == manifest
    assert manifest.seeds == {"mixture": 0, "trainer": 11}
    assert manifest.mixture_hash == mixture.hash and manifest.examples == 16
    assert manifest.held_out_clusters == ("comparison",)
    assert set(manifest.environment["git"]) == {"commit", "dirty"}
    stored = json.loads(path.read_text())
    parity = next(t for t in stored["tasks"] if t["name"] == "parity")
    assert sum(sum(t["examples_by_shots"].values()) for t in parity["templates"]) == parity["examples"] == 8


def test_a_folder_without_manifest_reads_as_none(tmp_path):
    assert read_manifest(tmp_path) is None


@pytest.mark.parametrize(("task", "template", "template_hash", "cluster", "label"), [
    ("compare_numbers", "q_options", "aaaa", "comparison", "seen"),
    ("compare_numbers", "q_options", "changed", "comparison", "held_out_template"),
    ("compare_numbers", "completion", "dddd", "comparison", "held_out_template"),
    ("compare_length", "q_options", "aaaa", "comparison", "held_out_task"),
    ("rte", "q_options", "eeee", "nli", "held_out_cluster"),
])
def test_seen_status_gives_the_four_labels(task, template, template_hash, cluster, label):
    assert seen_status(hand_made(), task, template, template_hash, cluster) == label


def _drop(key):
    def change(raw):
        del raw[key]
        return raw
    return change


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: "{not json", r"malformed training manifest \(Expecting"),
    (_drop("mixture_hash"), r"missing field 'mixture_hash'"),
    (lambda raw: {**raw, "seeds": {"mixture": "zero"}}, r"field 'seeds' must map names to integers"),
    (lambda raw: {**raw, "tasks": [{**raw["tasks"][0], "rows": "64"}]}, r"field tasks\[0\].'rows' has the wrong type"),
    (lambda raw: {**raw, "tasks": [{**raw["tasks"][0], "templates": [{"id": "x"}]}]},
     r"missing field tasks\[0\].templates\[0\].'examples_by_shots'"),
    (lambda raw: {**raw, "format_version": 99}, r"format_version 99 is newer"),
    (lambda raw: [], r"the top level must be an object"),
])
def test_malformed_manifest_is_one_line_naming_the_file(tmp_path, change, message):
    path = write_manifest(tmp_path, hand_made())
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(HarnessError, match=message) as error:
        read_manifest(tmp_path)
    assert str(error.value).startswith(f"{path}: malformed training manifest")
    assert "\n" not in str(error.value)
