"""Data-parallel training through accelerate: two CPU processes (gloo) end with the weights one
process gets by accumulating the same micro-batches, since each rank takes every other micro-batch
of a step and the loss is normalised by the step's label count across ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.tune.trainer import TrainConfig, train
from tests.test_trainer import PAIRS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun (part of torch) is not next to this Python")
def test_two_processes_end_with_the_weights_of_one_process_accumulating(tiny_models, tmp_path):
    base = tiny_models["tiny-llama"]
    common = dict(steps=2, lr=1e-3, seed=3, max_length=64, log_every=1, batch_size=2)
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(PAIRS))
    config = json.dumps(asdict(TrainConfig(grad_accum=1, **common)))
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    launched = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(Path(__file__).with_name("ddp_worker.py")),
         str(pairs_file), str(base), config, str(tmp_path / "ddp")],
        env=environment, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    train(PAIRS, base, TrainConfig(grad_accum=2, **common), tmp_path / "single")
    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    single = load_file(tmp_path / "single" / "model.safetensors")
    start = load_file(Path(base) / "model.safetensors")
    assert any(not torch.equal(ddp[k], start[k]) for k in ddp), "training moved the weights"
    for key in ddp:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-6)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun (part of torch) is not next to this Python")
def test_harness_tune_under_torchrun_talks_once_and_writes_one_checkpoint(tiny_models, tmp_path):
    out = tmp_path / "tuned"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    launched = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "harness.cli", "tune",
         "--base", str(tiny_models["tiny-llama"]), "--held-out", "comparison", "--steps", "2", "--total", "16",
         "--batch-size", "2", "--save-every", "1", "--out", str(out)],
        env=environment, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert launched.stdout.count("Training mixture") == 1 and launched.stdout.count("trained 2 steps") == 1
    from harness.seen import read_manifest

    assert read_manifest(out).trained_steps == 2 and read_manifest(out / "checkpoint-1").trained_steps == 1
