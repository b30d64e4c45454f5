"""The benchmark's models: random-initialised Llamas built locally (no hub), cached under HARNESS_CACHE.

Random weights make every score meaningless but every cost real: the work per token depends on
the shapes, never on the values (greedy generations end at different places, which the benchmark
reports rather than hides).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def shared_texts() -> list[str]:
    """Lines of every text file under ../shared/data (empty when the folder is absent)."""
    folder = ROOT.parent / "shared" / "data"
    lines: list[str] = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".txt", ".md"):
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return lines


def tiny() -> Path:
    from harness.builtin.tiny_models import builtin_models

    return builtin_models()["tiny-llama"]


def llama_20m() -> Path:
    """~20M parameters with a realistic vocabulary: 16,384 BPE tokens trained on the suite's text
    plus the project's shared evaluation rows (../shared/data); hidden 320, 6 layers, 5 heads."""
    from harness.builtin.tiny_models import build_tiny_model, default_texts

    return build_tiny_model("bench-llama-20m-v16k", texts=[*default_texts(), *shared_texts()],
                            hidden_size=320, num_layers=6, num_heads=5, vocab_size=16384)


def llama_20m_small_vocab() -> Path:
    """~21M parameters with the suite's own small vocabulary (the BPE stops at ~2.7k tokens on it):
    a body-heavy model, where skipping the LM head at unscored positions saves little."""
    from harness.builtin.tiny_models import build_tiny_model

    return build_tiny_model("bench-llama-20m", hidden_size=384, num_layers=8, num_heads=6, vocab_size=8192,
                            max_position_embeddings=2048)


LLAMA_3_2_1B_SHAPE: dict[str, Any] = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0, "tie_word_embeddings": True,
    # The real model allows 131072; 4096 keeps lm-eval's batch-size probe (64 x max_length) sane.
    "max_position_embeddings": 4096,
}


def llama_1b_shape(**overrides: Any) -> Path:
    """Llama-3.2-1B's shapes (1.24B parameters, GQA 32/8, vocab 128256, tied embeddings), random
    bf16 weights, with the 16k-token BPE of `llama_20m` (ids below 16384 of the 128256 rows).

    For the GPU benchmark (bench/gpu.md); `overrides` shrink it for a smoke test of this builder.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from harness.builtin.tiny_models import cache_root

    shape = {**LLAMA_3_2_1B_SHAPE, **overrides}
    tag = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_root() / "models" / f"bench-llama-3.2-1b-shape-{tag}"
    if (final / "model.safetensors").is_file() or (final / "model.safetensors.index.json").is_file():
        return final
    tokenizer = AutoTokenizer.from_pretrained(str(llama_20m()))
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = LlamaConfig(**shape, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**ids)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# name -> (row divisor, builder). The divisor keeps slow models within the time budget.
MODELS: dict[str, tuple[int, Callable[[], Path]]] = {
    "tiny": (1, tiny),
    "20m": (1, llama_20m),
    # Its 4x larger body makes it the slowest of the CPU models: a quarter of the rows.
    "20m-smallvocab": (4, llama_20m_small_vocab),
    "1b-shape": (1, llama_1b_shape),
}
