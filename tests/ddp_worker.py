"""One process of the two-process data-parallel training test (launched by torchrun from
tests/test_trainer_ddp.py): trains the tiny model on the given pairs with the given config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness.tune.trainer import TrainConfig, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    pairs_file, base, config_json, out = sys.argv[1:5]
    pairs = [tuple(pair) for pair in json.loads(Path(pairs_file).read_text())]
    train(pairs, base, TrainConfig(**json.loads(config_json)), out)
