"""Tests of the offline tiny-model builder: tokenizer fidelity, caching, atomicity and loadability."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.builtin import tiny_models
from harness.builtin.tiny_models import (
    build_tiny_model,
    build_tokenizer,
    builtin_models,
    cache_root,
    default_texts,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is 2 + 2?\nAnswer: 4",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 42 1000, and punctuation: ; ! ? ( ) \"quotes\".",
    "<|user|>\nhi\n<|assistant|>\nhello</s>\n",
]
SMALL = dict(texts=TEXTS, vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128)
ROUND_TRIP = [
    " leading space",
    "a\n\nb",
    "1234567890 + 42 = 1234567932",
    "  two spaces, trailing space ",
    "tabs\tand\r\nCRLF",
    "x , y . z ?",
    "unicode: héllo wörld 世界 🙂",
    "",
]
GOLDEN_CHAT = "<s><|user|>\nhi\n<|assistant|>\n"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test builds into its own cache so the user's ~/.cache is never touched."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Spy on the expensive step, so tests can tell a cache hit from a rebuild."""
    calls: list[Path] = []
    real = tiny_models.write_random_model

    def spy(out: Path, *args, **kwargs) -> None:
        calls.append(out)
        real(out, *args, **kwargs)

    monkeypatch.setattr(tiny_models, "write_random_model", spy)
    return calls


def test_cache_root_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == tmp_path / "cache"
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "harness"


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tokenizer_round_trips_exactly(text: str) -> None:
    tok = build_tokenizer(TEXTS, vocab_size=300)
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_tokenizer_special_tokens_and_bos() -> None:
    tok = build_tokenizer(TEXTS, vocab_size=300)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    with_bos = tok("hi").input_ids
    without = tok("hi", add_special_tokens=False).input_ids
    assert with_bos[0] == tok.bos_token_id
    assert with_bos[1:] == without
    assert tok.bos_token_id not in without
    assert len(tok) <= 300


def test_build_is_cached_and_fingerprinted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_builds(monkeypatch)
    path = build_tiny_model("t", **SMALL)
    assert path.parent == cache_root() / "models" and path.name.startswith("t-")
    for name in tiny_models.REQUIRED_FILES:
        assert (path / name).is_file(), name
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model("t", **SMALL) == path
    assert len(calls) == 1
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert build_tiny_model("t", **{**SMALL, "seed": 1}) != path
    assert build_tiny_model("t", **{**SMALL, "texts": TEXTS[:-1]}) != path
    assert build_tiny_model("t", **{**SMALL, "hidden_size": 16}) != path
    assert len(calls) == 4
    assert build_tiny_model("t", force=True, **SMALL) == path
    assert len(calls) == 5
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_same_seed_same_weights_in_another_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_tiny_model("t", **SMALL)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "other"))
    second = build_tiny_model("t", **SMALL)
    assert first.name == second.name and first != second
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_model_loads_with_transformers() -> None:
    path = build_tiny_model("t", **SMALL)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings is False
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tok)
    assert model.config.max_position_embeddings == 128
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (0, 1, 2)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    batch = tok("Question: What is 2 + 2?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch.input_ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()
    assert tok.decode(tok(" 4\n\nok", add_special_tokens=False).input_ids) == " 4\n\nok"


def test_chat_template_golden() -> None:
    chat = AutoTokenizer.from_pretrained(build_tiny_model("c", chat=True, **SMALL))
    prompt = chat.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == GOLDEN_CHAT
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert chat.apply_chat_template(convo, tokenize=False) == (
        "<s><|system|>\nBe brief.\n<|user|>\nhi\n<|assistant|>\nhello</s>\n"
    )
    with pytest.raises(Exception, match="roles must be"):
        chat.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    plain = AutoTokenizer.from_pretrained(build_tiny_model("p", **SMALL))
    assert plain.chat_template is None


def test_crash_mid_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self, *args, **kwargs) -> None:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_models.LlamaForCausalLM, "save_pretrained", boom)
        with pytest.raises(RuntimeError, match="disk full"):
            build_tiny_model("t", **SMALL)
    models = cache_root() / "models"
    assert list(models.iterdir()) == []  # neither the final folder nor a temporary one
    assert (build_tiny_model("t", **SMALL) / "model.safetensors").is_file()


def test_concurrent_builder_that_wins_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """If another builder renames its folder into place first, ours is discarded, not merged."""
    real = tiny_models.write_random_model
    outer: list[Path] = []

    def racing(out: Path, *args, **kwargs) -> None:
        if not outer:
            outer.append(out)
            monkeypatch.setattr(tiny_models, "write_random_model", real)
            winner = build_tiny_model("t", **SMALL)  # the "other process" finishes first
            (winner / "winner").write_text("1")
        real(out, *args, **kwargs)

    monkeypatch.setattr(tiny_models, "write_random_model", racing)
    path = build_tiny_model("t", **SMALL)
    assert (path / "winner").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_default_texts_and_builtin_models(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = default_texts()
    assert texts == default_texts()
    joined = "\n".join(texts)
    assert "<|assistant|>" in joined and "Question:" in joined
    suite = pytest.importorskip("harness.builtin.suite")
    name = sorted(suite.GENERATORS)[0]
    row = suite.generate_rows(name, seed=0, split="train", n=1)[0]
    assert all(v in texts for v in row.values() if isinstance(v, str))

    start = time.perf_counter()
    models = builtin_models()
    assert time.perf_counter() - start < 30
    assert set(models) == {"tiny-llama", "tiny-llama-chat"}
    plain, chat = models["tiny-llama"], models["tiny-llama-chat"]
    for fname in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (plain / fname).read_bytes() == (chat / fname).read_bytes(), fname
    assert AutoTokenizer.from_pretrained(plain).chat_template is None
    chat_tok = AutoTokenizer.from_pretrained(chat)
    assert chat_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    ) == GOLDEN_CHAT
    assert builtin_models() == models


def test_lm_eval_hf_backend_loads_model() -> None:
    pytest.importorskip("accelerate", reason="lm-eval's hf backend imports accelerate")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    path = build_tiny_model("t", **SMALL)
    lm = HFLM(pretrained=str(path), device="cpu", dtype="float32", batch_size=1)
    ids = lm.tok_encode("hello")
    assert ids[0] == lm.tokenizer.bos_token_id == 0
    request = Instance(request_type="loglikelihood", doc={}, arguments=("Question: 2+2?", " 4"), idx=0)
    [(logprob, greedy)] = lm.loglikelihood([request])
    assert isinstance(greedy, bool)
    assert -100.0 < logprob < 0.0
