"""`harness tune` end to end on the tiny model, and `harness run` labelling scores by the manifest."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from harness.cli import main
from harness.seen import MANIFEST_FILE, read_manifest, seen_status
from harness.tasks.registry import Registry
from harness.tune import run as tune_run
from harness.tune.manifest import write_manifest
from harness.tune.mixture import MixtureConfig, build_mixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tune_args(base: Path, out: Path, *extra: str) -> list[str]:
    return ["tune", "--base", str(base), "--held-out", "comparison", "--steps", "4", "--total", "40",
            "--batch-size", "4", "--save-every", "2", "--out", str(out), *extra]


def _stable(manifest) -> dict:
    """A manifest without what differs between two identical tunings (the clock, the environment)."""
    return {k: v for k, v in asdict(manifest).items() if k not in ("created", "environment")}


@pytest.fixture(scope="module")
def tuned(tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tune") / "ckpt"
    assert main(_tune_args(tiny_models["tiny-llama"], out)) == 0
    return out


def test_tune_writes_a_loadable_checkpoint_and_its_manifest(tuned, tiny_models, plain_backend, capsys):
    from transformers import AutoModelForCausalLM

    from harness.engine import HFBackend

    AutoModelForCausalLM.from_pretrained(tuned)
    described = HFBackend(str(tuned), dtype="float32", device="cpu").describe()
    manifest = read_manifest(tuned)
    assert manifest is not None
    assert described["weights_sha256"] != plain_backend.describe()["weights_sha256"]
    assert manifest.base_weights_hash == plain_backend.describe()["weights_sha256"]
    assert manifest.held_out_clusters == ("comparison",)
    assert not {t.name for t in manifest.tasks} & {"compare_length", "compare_numbers"}
    assert manifest.examples == 40
    assert manifest.hyperparameters["steps"] == 4 and manifest.seeds == {"mixture": 0, "train": 0}
    # The mixture is the one the library builds for the same settings (no chat template on this model).
    mixture = build_mixture(Registry(), MixtureConfig(held_out_clusters=("comparison",), total_examples=40))
    assert manifest.mixture_hash == mixture.hash
    assert manifest.tasks == mixture.tasks


def test_run_labels_scores_seen_or_held_out(tuned, tmp_path, capsys):
    manifest = read_manifest(tuned)
    parity = next(t for t in manifest.tasks if t.name == "parity")
    assert 0 < len(parity.templates) < 6, "a 40-example mixture leaves some parity templates unseen"
    assert main(["run", "--model", str(tuned), "--tasks", "parity,compare_numbers", "--limit", "3",
                 "--out", str(tmp_path)]) == 0
    record = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    assert record["training_manifest"]["mixture_hash"] == manifest.mixture_hash
    assert record["training_manifest"]["held_out_clusters"] == ["comparison"]
    assert record["seen_source"] == "manifest" and "declared_seen" not in record
    trained = {t.id for t in parity.templates}
    statuses = {(s["task"], s["template"]): s["seen_status"] for s in record["scores"]}
    for (task, template), status in statuses.items():
        if task == "parity":
            assert status == ("seen" if template in trained else "held_out_template")
        else:
            assert status == "held_out_cluster"
    assert set(statuses.values()) == {"seen", "held_out_template", "held_out_cluster"}
    assert all(s["seen_status"] == seen_status(manifest, s["task"], s["template"], s["template_hash"], s["cluster"])
               for s in record["scores"])
    table = capsys.readouterr().out
    assert "held out template" in table and "held out cluster" in table


def test_untuned_model_scores_carry_no_seen_status(tiny_models, tmp_path, capsys):
    assert main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity", "--templates", "completion",
                 "--limit", "1", "--out", str(tmp_path)]) == 0
    record = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    assert "training_manifest" not in record and record["seen_source"] == "none"
    assert all("seen_status" not in s for s in record["scores"])


def test_contaminated_held_out_task_is_warned_about(tuned, tmp_path, caplog, capsys):
    folder = tmp_path / "contaminated"
    shutil.copytree(tuned, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    manifest = read_manifest(folder)
    parity = next(t for t in manifest.tasks if t.name == "parity")
    leaked = type(parity)("compare_numbers", "comparison", "x", "train", 10, 1, parity.templates[:1])
    write_manifest(folder, type(manifest)(**{**asdict(manifest), "tasks": (*manifest.tasks, leaked)}))
    assert main(["run", "--model", str(folder), "--tasks", "compare_numbers", "--templates", "completion",
                 "--limit", "1", "--out", str(tmp_path / "runs")]) == 0
    warnings = [r.getMessage() for r in caplog.records if "contamination" in r.getMessage()]
    assert len(warnings) == 1 and "compare_numbers" in warnings[0]


def test_resume_after_an_interruption_ends_like_the_uninterrupted_run(tuned, tiny_models, tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "ckpt"
    real_train = tune_run.train

    def stopped_after_two_steps(*args, on_progress=None, **kwargs):
        def progress(p):
            on_progress(p)
            if p.step == 2:
                raise KeyboardInterrupt
        return real_train(*args, on_progress=progress, **kwargs)

    monkeypatch.setattr(tune_run, "train", stopped_after_two_steps)
    assert main(_tune_args(tiny_models["tiny-llama"], out)) == 130
    assert (out / "checkpoint-2").is_dir() and not (out / MANIFEST_FILE).exists()
    monkeypatch.setattr(tune_run, "train", real_train)
    # Without --resume the folder is refused; with it, training continues from step 2.
    assert main(_tune_args(tiny_models["tiny-llama"], out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_tune_args(tiny_models["tiny-llama"], out, "--resume")) == 0
    assert "resuming from" in capsys.readouterr().out
    assert _stable(read_manifest(out)) == _stable(read_manifest(tuned))
    ours, theirs = load_file(out / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    # Resuming a finished tuning changes nothing.
    written = (out / MANIFEST_FILE).read_bytes()
    assert main(_tune_args(tiny_models["tiny-llama"], out, "--resume")) == 0
    assert "already holds" in capsys.readouterr().out
    assert (out / MANIFEST_FILE).read_bytes() == written


@pytest.mark.parametrize(("extra", "expected"), [
    (["--held-out", "nope"], "unknown held-out cluster 'nope'"),
    (["--chat", "on"], "no chat template"),
])
def test_bad_tune_input_is_one_line_and_exit_2(tiny_models, tmp_path, capsys, extra, expected):
    args = _tune_args(tiny_models["tiny-llama"], tmp_path / "ckpt")
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()


def test_intermediate_checkpoints_carry_their_own_manifest(tuned, tmp_path):
    final, middle = read_manifest(tuned), read_manifest(tuned / "checkpoint-2")
    assert final is not None and middle is not None
    assert (final.trained_steps, middle.trained_steps) == (4, 2)
    assert _stable(replace(middle, trained_steps=4)) == _stable(final)
    # An intermediate checkpoint evaluates with the same seen/held-out labels as the final one.
    assert main(["run", "--model", str(tuned / "checkpoint-2"), "--tasks", "parity", "--templates", "completion",
                 "--limit", "1", "--out", str(tmp_path)]) == 0
    record = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    assert record["seen_source"] == "manifest" and record["scores"][0]["seen_status"] in ("seen", "held_out_template")
