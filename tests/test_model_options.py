"""The transformers backend's model flags: --device-map / --max-memory placement through accelerate,
--revision and --trust-remote-code, and what --dtype auto means on each device.

On a machine with only a CPU, accelerate's "auto" map puts every module on the CPU; the test still
goes through `from_pretrained(device_map=..., max_memory=...)`, the record's placement summary and
the input device taken from the embeddings, and the scores must equal those of the plain load.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.engine import HFBackend
from harness.engine.base import ChoiceRequest, GenerateRequest
from harness.engine.hf_model import default_dtype, parse_placement
from harness.errors import HarnessError
from tests.conftest import collect

REQUESTS = [
    ChoiceRequest("Is 12 even or odd?\nAnswer:", (" even", " odd")),
    ChoiceRequest("The larger of 603 and 581 is", (" 603", " 581", " neither of the two")),
]


@pytest.mark.parametrize("device_map, max_memory, device, message", [
    (None, "cpu=1GiB", None, "--max-memory cpu=1GiB limits what --device-map places on each device"),
    ("auto", None, "cpu", "--device cpu with --device-map auto: a device map places the model itself"),
    ("everywhere", None, None, "--device-map everywhere: neither a strategy"),
    ("auto", "cpu:1GiB", None, "--max-memory cpu:1GiB: 'cpu:1GiB' is not DEVICE=SIZE"),
    ("auto", "0=20GiB,cpu=lots", None, "'cpu=lots' is not DEVICE=SIZE"),
])
def test_placement_flags_are_checked_in_one_line(device_map, max_memory, device, message):
    with pytest.raises(HarnessError) as caught:
        parse_placement(device_map, max_memory, device)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_placement_parses_limits_and_a_json_map(tmp_path):
    placement = parse_placement("balanced", "0=20GiB,1=20GiB,cpu=64GiB", None)
    assert placement.device_map == "balanced" and placement.max_memory == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"model": "cpu", "lm_head": 0}))
    placement = parse_placement(str(mapping), None, None)
    assert placement.device_map == {"model": "cpu", "lm_head": 0} and placement.requested == str(mapping)
    mapping.write_text("[1, 2]")
    with pytest.raises(HarnessError, match="must be a non-empty object of module name -> device"):
        parse_placement(str(mapping), None, None)
    mapping.write_text("{not json")
    with pytest.raises(HarnessError, match="not a JSON file"):
        parse_placement(str(mapping), None, None)


def test_auto_device_map_on_a_cpu_scores_as_the_plain_load(tiny_models, plain_backend, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"": "cpu"}))
    parameters = sum(p.numel() for p in plain_backend.model.parameters())
    expected = collect(plain_backend.score(REQUESTS))
    generations = collect(plain_backend.generate([GenerateRequest("Is 12 even or odd?\nAnswer:", 8, ("\n",))]))
    for device_map, max_memory in (("auto", None), ("sequential", "cpu=2GiB"), (str(mapping), None)):
        placed = HFBackend(str(tiny_models["tiny-llama"]), dtype="float32", device_map=device_map,
                           max_memory=max_memory)
        assert placed.device == torch.device("cpu")
        described = placed.describe()
        assert described["placement"] == {
            "device_map": device_map if device_map != str(mapping) else str(mapping.resolve()),
            "max_memory": {"cpu": max_memory.split("=")[1]} if max_memory else None,
            "devices": {"cpu": {"modules": 1, "parameters": parameters}},
        }
        assert described["device"] == "cpu"
        got = collect(placed.score(REQUESTS))
        for index, results in expected.items():
            for ours, theirs in zip(got[index], results, strict=True):
                assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-5)
                assert (ours.is_greedy, ours.num_tokens) == (theirs.is_greedy, theirs.num_tokens)
        assert collect(placed.generate([GenerateRequest("Is 12 even or odd?\nAnswer:", 8, ("\n",))])) == generations
    assert "placement" not in plain_backend.describe(), "a plain load's record is unchanged"


def test_cli_device_map_run_records_placement_and_equal_scores(tiny_models, tmp_path):
    def run(name, *extra):
        code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity", "--templates",
                     "instr_terse", "--limit", "4", "--dtype", "float32", "--out", str(tmp_path), "--run-id", name,
                     *extra])
        assert code == 0
        samples = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        return json.loads((tmp_path / name / "run.json").read_text()), sorted(samples, key=lambda s: s["key"])

    plain_record, plain = run("plain", "--device", "cpu")
    placed_record, placed = run("placed", "--device-map", "auto", "--max-memory", "cpu=4GiB")
    assert placed_record["model"]["placement"]["devices"] == {
        "cpu": {"modules": 1, "parameters": plain_record["model"]["num_parameters"]}}
    assert placed_record["model"]["placement"]["max_memory"] == {"cpu": "4GiB"}
    assert [s["key"] for s in placed] == [s["key"] for s in plain] and len(plain) == 4
    for ours, theirs in zip(placed, plain, strict=True):
        assert ours["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-5)
        assert ours["metrics"] == theirs["metrics"]


def test_revision_is_for_hub_models_and_trust_remote_code_is_recorded(tiny_models):
    folder = str(tiny_models["tiny-llama"])
    with pytest.raises(HarnessError, match=r"--revision main names a commit of a hub model; .* is local, so drop it"):
        HFBackend(folder, revision="main")
    trusted = HFBackend(folder, dtype="float32", device="cpu", trust_remote_code=True)
    assert trusted.describe()["trust_remote_code"] is True


def test_revision_reaches_the_hub_loaders(monkeypatch):
    """With a hub id, --revision and --trust-remote-code are handed to both the tokenizer and the model."""
    import transformers

    seen = {}

    class Stop(Exception):
        pass

    def tokenizer(name, **kwargs):
        seen["tokenizer"] = (name, kwargs)
        return object()

    def model(name, **kwargs):
        seen["model"] = (name, kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    with pytest.raises(Stop):
        HFBackend("owner/name", dtype="float32", device="cpu", revision="v1.2", trust_remote_code=True)
    assert seen["tokenizer"] == ("owner/name", {"revision": "v1.2", "trust_remote_code": True})
    assert seen["model"][1]["revision"] == "v1.2" and seen["model"][1]["trust_remote_code"] is True


def test_auto_dtype_per_device(monkeypatch):
    assert default_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert default_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert default_dtype(torch.device("cuda")) == torch.bfloat16


def test_cli_refuses_max_memory_without_a_device_map(tiny_models, tmp_path, capsys):
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--tasks", "parity", "--max-memory", "cpu=1GiB",
                 "--out", str(tmp_path)])
    assert code == 2 and "add --device-map auto" in capsys.readouterr().err
