"""The trainer: labels as evaluation tokenises them, packing without leaks, exact accumulation and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.engine import tokenization
from harness.engine.base import ChoiceRequest
from harness.errors import HarnessError
from harness.tune.packing import IGNORE, DataOrder, collate, encode_example, encode_examples, token_losses
from harness.tune.trainer import TrainConfig, train
from tests.conftest import collect

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Answers of different token lengths, so a mean of per-micro-batch means would differ from the mean.
PAIRS = [
    ("Question: What colour is the sky?\nAnswer:", " blue"),
    ("Question: How many legs does a spider have?\nAnswer:", " 8"),
    ("Question: Is fire cold?\nAnswer:", " no, it is hot"),
    ("Question: What is 2 + 2?\nAnswer:", " 4"),
    ("Question: Name a fruit.\nAnswer:", " apple pie and more"),
    ("Question: Is water wet?\nAnswer:", " yes"),
]


def _labels(example) -> list[int]:
    return [t for t in example.targets if t != IGNORE]


def test_label_mask_plain(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["tiny-llama"])
    example = encode_example(tokenizer, "Question: Is water wet?\nAnswer: ", "yes", max_length=64)
    # The trailing space moves onto the completion (lm-eval's rule), so the labels are " yes" + EOS.
    assert tokenizer.convert_ids_to_tokens(_labels(example)) == ["Ġy", "es", "</s>"]
    context, completion = tokenization.encode_pair(tokenizer, "Question: Is water wet?\nAnswer:", " yes",
                                                   tokenizer.bos_token_id)
    assert list(example.inputs) == context + completion  # EOS is a target, never an input
    assert list(example.targets) == [IGNORE] * (len(context) - 1) + completion + [tokenizer.eos_token_id]
    assert example.inputs[0] == tokenizer.bos_token_id


def test_label_mask_chat(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["tiny-llama-chat"])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Is water wet?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.startswith("<s>")
    example = encode_example(tokenizer, prompt, "yes", max_length=64)
    # The generation prompt's trailing newline moves onto the completion, exactly as evaluation scores it.
    assert tokenizer.decode(_labels(example)) == "\nyes</s>"
    assert example.inputs.count(tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    context_ids = tokenizer.encode(prompt.rstrip(), add_special_tokens=False)
    assert list(example.inputs[:len(context_ids)]) == context_ids
    assert example.targets[:len(context_ids) - 1] == (IGNORE,) * (len(context_ids) - 1)
    assert example.targets[len(context_ids) - 1] != IGNORE


def test_all_masked_example_fails_loudly(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["tiny-llama"])
    pairs = [("Short:", " a"), ("A long prompt " * 20, " answer")]
    with pytest.raises(HarnessError, match="training example 1: every label is masked"):
        encode_examples(tokenizer, pairs, max_length=16)


def _old_encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """HFBackend.encode_pair as it was before the rules moved to harness.engine.tokenization."""
    def encode(text: str) -> list[int]:
        bos = tokenizer.bos_token
        return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))

    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if not context:
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        return (ids[:1], ids[1:]) if ids and ids[0] == prefix else ([prefix], ids)
    stripped = context.rstrip()
    if len(stripped) < len(context):
        continuation, context = context[len(stripped):] + continuation, stripped
    whole, context_ids = encode(context + continuation), encode(context)
    return context_ids, whole[len(context_ids):]


def test_backend_encode_pair_unchanged_by_refactor(plain_backend, chat_backend) -> None:
    cases = [("Answer:", " yes"), ("Answer: ", "yes"), ("Answer:\n\n", "4"), ("", "hello"), ("", "<s>hi"),
             ("<s><|user|>\nhi\n<|assistant|>\n", "Hello!"), ("x", ""), ("  ", " a b")]
    for backend in (plain_backend, chat_backend):
        for context, continuation in cases:
            expected = _old_encode_pair(backend.tokenizer, context, continuation)
            assert backend.encode_pair(context, continuation) == expected
            assert tokenization.encode_pair(backend.tokenizer, context, continuation,
                                            backend.prefix_token_id) == expected
            assert backend.encode(context or "x") == tokenization.encode(backend.tokenizer, context or "x")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_equals_alone(tiny_models: dict[str, Path], attention: str) -> None:
    path = tiny_models["tiny-llama"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention).eval()
    examples = encode_examples(tokenizer, PAIRS, max_length=128)
    packed = collate(examples, capacity=128, packed=True, pad_id=tokenizer.pad_token_id)
    assert packed.input_ids.shape[0] < len(examples)  # several examples really share a row
    with torch.no_grad():
        losses = token_losses(model, packed)
        for i, example in enumerate(examples):
            alone = token_losses(model, collate([example], capacity=128, packed=True, pad_id=0)).sum()
            together = losses[packed.example_ids == i].sum()
            assert abs(float(together) - float(alone)) < 1e-5 * max(1.0, float(alone))


def _weights(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / name))


def test_gradient_accumulation_matches_one_batch(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    base = tiny_models["tiny-llama"]
    common = dict(steps=2, lr=1e-3, seed=3, max_length=64, log_every=1)
    train(PAIRS, base, TrainConfig(batch_size=2, grad_accum=2, **common), tmp_path / "accum")
    train(PAIRS, base, TrainConfig(batch_size=4, grad_accum=1, packing="padded", **common), tmp_path / "one")
    accum, one = _weights(tmp_path / "accum"), _weights(tmp_path / "one")
    start = _weights(base)
    assert any(not torch.equal(accum[k], start[k]) for k in accum)
    # Two Adam steps of lr 1e-3 move a weight by ~2e-3; summing the loss in two halves instead of one
    # batch changes float rounding, which Adam's normalisation can bring to a few 1e-6 (3.7e-6 seen on
    # a busy machine). A wrongly weighted accumulation moves weights by far more than 1e-5.
    for key in accum:
        torch.testing.assert_close(accum[key], one[key], rtol=0, atol=1e-5)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}])
def test_resume_ends_with_same_weights(tiny_models: dict[str, Path], tmp_path: Path, lora) -> None:
    if lora is not None:
        pytest.importorskip("peft")
    config = TrainConfig(steps=6, batch_size=2, grad_accum=2, lr=1e-3, warmup_steps=2, weight_decay=0.1,
                         max_length=64, save_every=3, log_every=1, seed=7, lora=lora, lora_save="merged")
    base = tiny_models["tiny-llama"]
    train(PAIRS, base, config, tmp_path / "straight")

    def crash(progress) -> None:
        if progress.step == 4:  # after the step-3 checkpoint: step 4 is lost with the crash
            raise _Stop

    with pytest.raises(_Stop):
        train(PAIRS, base, config, tmp_path / "resumed", on_progress=crash)
    summary = train(PAIRS, base, config, tmp_path / "resumed", resume_from=tmp_path / "resumed" / "checkpoint-3")
    assert summary.steps == 6
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed")  # merged LoRA: a plain Llama again
    assert type(loaded).__name__ == "LlamaForCausalLM" and not any("lora" in k for k in resumed)
    different = TrainConfig(**{**config.__dict__, "lr": 2e-3})
    with pytest.raises(HarnessError, match="lr differ"):
        train(PAIRS, base, different, tmp_path / "x", resume_from=tmp_path / "resumed" / "checkpoint-3")


def _preferred(backend, pairs, options) -> list[str]:
    requests = [ChoiceRequest(context=p, continuations=tuple(options)) for p, _ in pairs]
    results = collect(backend.score(requests))
    return [options[max(range(len(options)), key=lambda k: results[i][k].logprob)] for i in range(len(pairs))]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-chat"])
def test_overfit_and_score_with_backend(tiny_models: dict[str, Path], tmp_path: Path, name: str) -> None:
    from harness.engine import HFBackend

    tokenizer = AutoTokenizer.from_pretrained(tiny_models[name])
    answers = [" blue", " 8", " no", " 4"]
    pairs = [(p, a) for (p, _), a in zip(PAIRS, answers, strict=False)]
    if name == "tiny-llama-chat":  # chat layout: the prompt is the template string, the answer bare
        pairs = [(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                add_generation_prompt=True), a.strip()) for p, a in pairs]
    options = [a for _, a in pairs]
    seen = []
    config = TrainConfig(steps=60, batch_size=4, lr=5e-3, warmup_steps=4, max_length=64, log_every=20)
    summary = train(pairs, tiny_models[name], config, tmp_path / "model", on_progress=seen.append)
    assert [p.step for p in seen] == [20, 40, 60]
    assert summary.final_loss < 0.3 * seen[0].loss and summary.tokens_seen > 0 and summary.tokens_per_s > 0
    assert (tmp_path / "model" / "train_config.json").is_file()
    backend = HFBackend(str(tmp_path / "model"), dtype="float32", device="cpu")
    assert backend.chat_format.available == (name != "tiny-llama")
    assert _preferred(backend, pairs, options) == options


def test_lora_adapter_loads_with_backend(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from harness.engine import HFBackend

    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    pairs = [(p, a) for (p, _), a in zip(PAIRS, [" blue", " 8", " no", " 4"], strict=False)]
    config = TrainConfig(steps=30, batch_size=4, lr=1e-2, max_length=64, lora=lora, lora_save="adapter")
    train(pairs, tiny_models["tiny-llama"], config, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    backend = HFBackend(str(tmp_path / "adapter"), dtype="float32", device="cpu")
    results = collect(backend.score([ChoiceRequest(context=p, continuations=(" blue", " 8")) for p, _ in pairs]))
    assert len(results) == len(pairs)


def test_gradient_checkpointing_and_clipping_change_nothing_but_memory(tiny_models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    common = dict(steps=2, batch_size=3, lr=1e-3, max_length=64, max_grad_norm=1e9)
    train(PAIRS, tiny_models["tiny-llama"], TrainConfig(**common), tmp_path / "plain")
    train(PAIRS, tiny_models["tiny-llama"], TrainConfig(gradient_checkpointing=True, **common), tmp_path / "ckpt")
    plain, ckpt = _weights(tmp_path / "plain"), _weights(tmp_path / "ckpt")
    for key in plain:
        torch.testing.assert_close(plain[key], ckpt[key], rtol=0, atol=1e-6)


def test_data_order_is_a_function_of_seed_and_position() -> None:
    first, again = DataOrder(5, seed=1), DataOrder(5, seed=1)
    stream = first.take(0, 15)
    assert again.take(7, 8) == stream[7:]  # a resumed run, starting mid-epoch, sees the same examples
    assert all(sorted(stream[i:i + 5]) == list(range(5)) for i in (0, 5, 10))  # each epoch: every example once
    assert DataOrder(5, seed=2).take(0, 15) != stream


def test_bad_config_fails_loudly(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="packing must be"):
        train(PAIRS, tiny_models["tiny-llama"], TrainConfig(packing="tight"), tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match="bf16 needs a CUDA GPU"):
            train(PAIRS, tiny_models["tiny-llama"], TrainConfig(bf16=True), tmp_path)
