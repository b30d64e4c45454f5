"""Fault findings on the transformers backend, each checked on the tiny model:

1. generations reach the runner (and so the durable sample log) as their rows finish, not when the
   generation batch's longest row ends, with the same texts as `model.generate`;
2. a prompt longer than the model's context is still cut as lm-eval cuts it, but counted
   (`backend.truncated`), warned about once per call, and refused under `on_overflow="error"`;
3. a device the machine lacks, a damaged weights file and a missing model folder end in one line.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.engine import ChoiceRequest, GenerateRequest, HFBackend
from harness.errors import HarnessError
from tests.conftest import collect

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = 40  # a model length short enough that a few sentences overflow it


@pytest.fixture(scope="module")
def backends(tiny_models: dict[str, Path]) -> dict[str, HFBackend]:
    path = str(tiny_models["tiny-llama"])
    return {
        "fast": HFBackend(path, dtype="float32", device="cpu"),
        "plain": HFBackend(path, dtype="float32", device="cpu", fast=False),
        "short": HFBackend(path, dtype="float32", device="cpu", max_length=SHORT),
    }


def run_cli(tmp_path: Path, model: str, *extra: str) -> int:
    return main(["run", "--model", model, "--tasks", "parity", "--limit", "1", "--out", str(tmp_path / "out"),
                 *extra])


# -- 1. finished generations are yielded as their rows finish ---------------------------------------

def mixed_limit_requests() -> list[GenerateRequest]:
    contexts = ["9 + 12 =", "Name the person: Farah went to Dublin.\nName:", "List: cat, dog\nFirst:",
                "The capital of France is", "Once upon a time", "Q: What is two plus two?\nA:"]
    return [GenerateRequest(c, 1 if i % 2 == 0 else 8, ()) for i, c in enumerate(contexts)]


def test_rows_with_a_short_limit_are_yielded_before_the_long_rows_of_their_batch(backends):
    fast, plain = backends["fast"], backends["plain"]
    requests = mixed_limit_requests()
    contexts = [fast.encode(r.context) for r in requests]
    assert len(fast._generation_batches(requests, contexts)) == 1, "the test needs one generation batch"
    yields = [list(part) for part in fast.generate(requests)]
    position = {index: k for k, part in enumerate(yields) for index, _ in part}
    assert sorted(i for part in yields for i, _ in part) == list(range(len(requests))), "each index exactly once"
    results = {index: text for part in yields for index, text in part}
    assert results == collect(plain.generate(requests)), "the same texts as model.generate"
    short = [i for i, r in enumerate(requests) if r.max_new_tokens == 1]
    long = [i for i, r in enumerate(requests) if r.max_new_tokens == 8
            and len(fast.tokenizer.encode(results[i], add_special_tokens=False)) > 1]
    assert long, "some limit-8 rows must decode past the first step"
    assert max(position[i] for i in short) < min(position[i] for i in long)
    assert len(yields) > 1


def test_out_of_memory_mid_generation_reruns_only_the_unfinished_rows(backends, monkeypatch):
    fast = backends["fast"]
    requests = mixed_limit_requests()
    expected = collect(fast.generate(requests))
    real = fast._generate_batch
    sizes, first = [], []

    def flaky(batch, *args):
        sizes.append(len(batch))
        for part in real(batch, *args):
            yield part
            if len(batch) > 2:  # out of memory after the batch's first rows are out
                first.extend(index for index, _ in part)
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fast, "_generate_batch", flaky)
    recovered = collect(fast.generate(requests))  # collect asserts each index comes exactly once
    assert recovered == expected
    assert sizes[0] == len(requests) and 0 < len(first) < len(requests)
    assert sum(sizes[1:]) == len(requests) - len(first), "only the rows not yet yielded are rerun"


# -- 2. overlong prompts: lm-eval's cut, counted and said, or refused -------------------------------

def long_text(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


def overflow_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "longer than the model's" in r.getMessage()]


def test_cut_prompts_are_counted_and_warned_about_once_per_call(backends, caplog):
    short = backends["short"]
    choice = [ChoiceRequest(long_text(60), (" yes", " no")), ChoiceRequest("Is it?", (" yes", " no")),
              ChoiceRequest(long_text(80), (" a",)), ChoiceRequest("Short", (" b",))]
    generate = [GenerateRequest(long_text(60), 4, ()), GenerateRequest("Hi", 4, ()),
                GenerateRequest(long_text(50), 8, ()), GenerateRequest(long_text(70), 4, ())]
    before = short.truncated
    with caplog.at_level(logging.WARNING):
        scores = collect(short.score(choice))
        assert short.truncated - before == 2
        [scoring] = overflow_records(caplog)
        assert scoring.getMessage().startswith(f"scoring: 2 of 4 prompts are longer than the model's max length "
                                               f"{SHORT} and were cut from the left to their last {SHORT} tokens")
        caplog.clear()
        texts = collect(short.generate(generate))
        assert short.truncated - before == 5
        [generation] = overflow_records(caplog)
        assert generation.getMessage().startswith(f"generation: 3 of 4 prompts are longer than the model's max "
                                                  f"length {SHORT} and were cut from the left to their last "
                                                  f"{SHORT - 8}-{SHORT - 4} tokens")
        caplog.clear()
        # A resumed run counts the requests an uninterrupted one cut.
        assert collect(short.score(choice, done=set(range(len(choice))))) == {}
        assert short.truncated - before == 7
    assert set(scores) == set(range(len(choice))) and set(texts) == set(range(len(generate)))
    # The cut is lm-eval's: the last max_length tokens of context + continuation, scored as usual.
    plain = backends["plain"]
    context, option = plain.encode_pair(choice[0].context, choice[0].continuations[0])
    window = (context + option)[-(SHORT + 1):]
    with torch.no_grad():
        logits = plain.model(input_ids=torch.tensor([window[:-1]])).logits[0].log_softmax(-1)
    targets = window[-len(option):]
    reference = sum(float(logits[SHORT - len(option) + k, t]) for k, t in enumerate(targets))
    assert scores[0][0].logprob == pytest.approx(reference, abs=1e-4)


def test_on_overflow_error_refuses_the_first_overlong_prompt_in_one_line(tiny_models):
    strict = HFBackend(str(tiny_models["tiny-llama"]), dtype="float32", device="cpu", max_length=SHORT,
                       on_overflow="error")
    requests = [GenerateRequest("Hi", 4, ()), GenerateRequest(long_text(60), 4, ()),
                GenerateRequest(long_text(70), 4, ())]
    length = len(strict.encode(requests[1].context))
    with pytest.raises(HarnessError) as raised:
        next(strict.generate(requests))  # before any batch runs
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"generation request 1: its prompt of {length} tokens plus max_new_tokens 4 is "
                              f"{length + 4} tokens, more than the model's max length {SHORT}; ")
    assert "--on-overflow truncate" in message
    with pytest.raises(HarnessError, match=rf"^scoring request 0: its context and continuation are \d+ tokens, "
                                           rf"more than the model's max length {SHORT}; "):
        next(strict.score([ChoiceRequest(long_text(60), (" yes",)), ChoiceRequest("Hi", (" a",))]))
    assert strict.truncated == 0
    # Prompts that fit run as usual.
    assert set(collect(strict.generate([GenerateRequest("Hi", 4, ())]))) == {0}


def test_an_unknown_on_overflow_is_refused(tiny_models):
    with pytest.raises(HarnessError, match=r"^--on-overflow 'cut' is not supported; use truncate or error$"):
        HFBackend(str(tiny_models["tiny-llama"]), device="cpu", on_overflow="cut")


# -- 3. one line instead of a traceback -------------------------------------------------------------

def test_a_cuda_device_on_a_machine_without_cuda_is_one_line(tiny_models, tmp_path, monkeypatch, one_error_line):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_cli(tmp_path, str(tiny_models["tiny-llama"]), "--device", "cuda:7") == 2
    assert one_error_line() == "error: --device cuda:7: CUDA is not available on this machine; use --device cpu"


def test_a_cuda_device_index_the_machine_lacks_is_one_line(tiny_models, tmp_path, monkeypatch, one_error_line):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert run_cli(tmp_path, str(tiny_models["tiny-llama"]), "--device", "cuda:7") == 2
    assert one_error_line() == ("error: --device cuda:7: no such device, this machine has 2 CUDA device(s) "
                                "(cuda:0 to cuda:1); use one of them or --device cpu")


def test_a_device_that_is_not_a_device_is_one_line(tiny_models, tmp_path, one_error_line):
    assert run_cli(tmp_path, str(tiny_models["tiny-llama"]), "--device", "gpu") == 2
    assert one_error_line() == "error: --device 'gpu' is not a device; use cpu, cuda or cuda:N"


@pytest.mark.parametrize("keep", ["half", "4 bytes", "inside the header"])
def test_a_damaged_weights_file_is_named_in_one_line(tiny_models, tmp_path, one_error_line, keep):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_models["tiny-llama"], folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    size = {"half": len(data) // 2, "4 bytes": 4, "inside the header": 40}[keep]
    weights.write_bytes(data[:size])
    assert run_cli(tmp_path, str(folder)) == 2
    line = one_error_line()
    assert line.startswith(f"error: {weights}: the weights file is damaged (")
    assert line.endswith("); re-download or rebuild the model")


@pytest.mark.parametrize("model", ["./no/such/model", "~/no-such-model-folder-xyz", "{tmp}/missing",
                                   "models/tiny/v1"])
def test_a_missing_model_folder_says_so(tmp_path, one_error_line, model):
    model = model.format(tmp=tmp_path)
    assert run_cli(tmp_path, model) == 2
    line = one_error_line()
    assert line.startswith(f"error: {model}: cannot load a causal LM, no such model folder (")
    assert str(Path(model).expanduser().resolve()) in line
    assert "Repo id" not in line


@pytest.mark.parametrize("model", ["weights/model.gguf", "tiny.gguf"])
def test_a_missing_gguf_file_says_so(tmp_path, one_error_line, model):
    assert run_cli(tmp_path, model) == 2
    line = one_error_line()
    assert line.startswith(f"error: {model}: no such GGUF file (")
    assert "does not exist); check the path given to --model / --gguf-file" in line


def test_a_hub_id_is_still_tried_on_the_hub(tmp_path, one_error_line):
    """`owner/name` is a hub id first (offline here, so it fails), never reported as a missing folder."""
    assert run_cli(tmp_path, "no-such-owner/no-such-model") == 2
    line = one_error_line()
    assert line.startswith("error: no-such-owner/no-such-model: cannot load a causal LM (")
    assert "no such local folder exists" in line and "no such model folder" not in line
