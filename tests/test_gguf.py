"""GGUF files: the flags that name them, their fingerprint and quantization, and the conversion cache.

The built-in tiny chat model, written as a GGUF file here (llama.cpp's tensor names and its q/k
row order), goes through transformers' GGUF reader and the harness's conversion and must score as
the original folder does; a stand-in conversion shows what the cache promises: one folder per file
content, written whole or not at all, reused without converting again. tests/real_model does the
same with a real quantized checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.engine import gguf as gguf_module
from harness.engine.gguf import MARKER, converted_folder, gguf_path, read_source
from harness.errors import HarnessError


def write_gguf(path: Path, scale: float = 1.0) -> Path:
    """A small GGUF file (metadata and two tensors, one Q8_0), enough to read; not a loadable model."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_block_count(1)
    weights = (np.arange(4 * 64, dtype=np.float32).reshape(4, 64) / 100) * scale
    quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", quantized, raw_shape=quantized.shape,
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# llama.cpp's names for a Llama layer's modules.
LAYER_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def write_llama_gguf(folder: Path, path: Path, quantize: bool = False) -> Path:
    """`folder`'s Llama model and byte-level BPE tokenizer as llama.cpp's converter writes them: its
    tensor names, q/k rows permuted for its rotary layout (transformers undoes that when reading), the
    tokenizer as tokens, types and merges, and the chat template; 2-D tensors as Q8_0 with `quantize`."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    q8 = gguf.GGMLQuantizationType.Q8_0
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(config["head_dim"])
    vocab = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].get)
    specials = {token["content"] for token in tokenizer["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if token in specials else 1 for token in vocab])  # 3: control
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)
    if (folder / "chat_template.jinja").is_file():
        writer.add_chat_template((folder / "chat_template.jinja").read_text())
    for key, value in load_file(folder / "model.safetensors").items():
        if key in TOP_NAMES:
            name = TOP_NAMES[key]
        else:
            _, _, layer, *rest = key.split(".")
            module = ".".join(rest[:-1])
            name = f"blk.{layer}.{LAYER_NAMES[module]}.weight"
            heads = {"self_attn.q_proj": config["num_attention_heads"],
                     "self_attn.k_proj": config["num_key_value_heads"]}.get(module)
            if heads:
                value = value.reshape(heads, 2, value.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(value.shape)
        if quantize and value.ndim == 2:
            blocks = gguf.quants.quantize(np.ascontiguousarray(value, dtype=np.float32), q8)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=q8)
        else:
            writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


@pytest.fixture
def fake_convert(monkeypatch) -> list[Path]:
    """Replace transformers' conversion with one that writes a small folder; returns the folders it wrote."""
    written: list[Path] = []

    def convert(source, folder, trust_remote_code):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / MARKER).write_text(json.dumps(source.describe()))
        written.append(folder)

    monkeypatch.setattr(gguf_module, "_convert", convert)
    return written


# -- naming the file ----------------------------------------------------------------------------------


def test_model_file_or_folder_and_name(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    assert gguf_path(str(path), None) == path.resolve()
    assert gguf_path(str(tmp_path), "m.gguf") == path.resolve()
    assert gguf_path(str(tmp_path), None) is None  # a folder without --gguf-file is an ordinary model folder
    assert gguf_path("owner/name", None) is None


@pytest.mark.parametrize("case, message", [
    ("missing", "no such GGUF file"),
    ("not-gguf", "not a GGUF file (it starts with b'{\"a\"', not b'GGUF')"),
    ("no-folder", "--gguf-file m.gguf needs --model FOLDER, the local folder holding the file; owner/name is not a "
                  "local folder"),
    ("twice", "already names a GGUF file"),
    ("folder-named", "is a folder, not a GGUF file"),
])
def test_each_wrong_way_to_name_a_gguf_is_one_line(tmp_path, case, message):
    write_gguf(tmp_path / "m.gguf")
    (tmp_path / "notes.gguf").write_text('{"a": 1}')
    (tmp_path / "sub.gguf").mkdir()
    model, name = {
        "missing": (str(tmp_path / "absent.gguf"), None),
        "not-gguf": (str(tmp_path / "notes.gguf"), None),
        "no-folder": ("owner/name", "m.gguf"),
        "twice": (str(tmp_path / "m.gguf"), "m.gguf"),
        "folder-named": (str(tmp_path), "sub.gguf"),
    }[case]
    with pytest.raises(HarnessError) as caught:
        gguf_path(model, name)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_refuses_a_missing_gguf_in_one_line(tmp_path, capsys):
    code = main(["run", "--model", str(tmp_path / "absent.gguf"), "--tasks", "parity", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "absent.gguf: no such GGUF file" in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_gguf_file_without_a_folder(tmp_path, capsys):
    code = main(["run", "--model", "owner/name", "--gguf-file", "m.gguf", "--tasks", "parity",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "--gguf-file m.gguf needs --model FOLDER" in capsys.readouterr().err


def test_gguf_flag_is_refused_by_a_backend_that_does_not_take_it(tmp_path, capsys):
    code = main(["run", "--backend", "scripted", "--model", "x", "--gguf-file", "m.gguf", "--tasks", "parity",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "backend 'scripted' does not take --gguf-file" in capsys.readouterr().err


# -- fingerprint and quantization ------------------------------------------------------------------------


def test_source_reads_sha256_file_type_and_tensor_types(tmp_path):
    import hashlib

    path = write_gguf(tmp_path / "m.gguf")
    source = read_source(path)
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source.file_type == "Q8_0"
    assert source.tensor_types == {"F32": 1, "Q8_0": 1}
    assert source.describe() == {"path": str(path), "sha256": source.sha256, "file_type": "Q8_0",
                                 "tensor_types": {"F32": 1, "Q8_0": 1}}


def test_a_damaged_gguf_is_one_line(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    path.write_bytes(path.read_bytes()[:40])  # the magic survives, the rest is cut
    with pytest.raises(HarnessError, match=r"m\.gguf: the GGUF file cannot be read"):
        read_source(path)


# -- the conversion cache ------------------------------------------------------------------------------


def test_conversion_is_keyed_by_content_and_reused(tmp_path, cache, fake_convert):
    first = read_source(write_gguf(tmp_path / "a.gguf"))
    copy = read_source(write_gguf(tmp_path / "b.gguf"))  # the same bytes under another name
    other = read_source(write_gguf(tmp_path / "c.gguf", scale=2.0))
    folder = converted_folder(first)
    assert folder == cache / first.sha256 and (folder / MARKER).is_file()
    stamp = (folder / MARKER).stat().st_mtime_ns
    assert converted_folder(copy) == folder and len(fake_convert) == 1, "same content: converted once"
    assert (folder / MARKER).stat().st_mtime_ns == stamp
    assert converted_folder(other) != folder and len(fake_convert) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.sha256, other.sha256])


def test_a_converted_file_is_described_from_its_marker(tmp_path, cache, fake_convert, monkeypatch):
    """Parsing GGUF metadata takes seconds; a converted file's quantization comes from its marker."""
    import gguf

    path = write_gguf(tmp_path / "a.gguf")
    source = read_source(path)
    converted_folder(source)

    def unreadable(*args, **kwargs):
        raise AssertionError("the GGUF metadata was parsed again")

    monkeypatch.setattr(gguf, "GGUFReader", unreadable)
    assert read_source(path) == source


def test_a_killed_conversion_leaves_nothing_trusted(tmp_path, cache, monkeypatch):
    source = read_source(write_gguf(tmp_path / "a.gguf"))

    def killed(source, folder, trust_remote_code):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_module, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        converted_folder(source)
    assert list(cache.iterdir()) == [], "neither the folder nor its partial copy remains"


def test_a_partial_conversion_of_a_dead_process_is_removed(tmp_path, cache, fake_convert):
    source = read_source(write_gguf(tmp_path / "a.gguf"))
    cache.mkdir(parents=True)
    dead = cache / f".{source.sha256}.999999999.partial"  # no such process
    live = cache / f".{source.sha256}.{os.getppid()}.partial"  # a running process: left alone
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    folder = converted_folder(source)
    assert not dead.exists() and live.exists() and (folder / MARKER).is_file()


def test_a_cache_folder_without_its_marker_is_not_trusted(tmp_path, cache, fake_convert):
    source = read_source(write_gguf(tmp_path / "a.gguf"))
    (cache / source.sha256).mkdir(parents=True)
    (cache / source.sha256 / "config.json").write_text("{}")
    with pytest.raises(HarnessError, match="without a valid harness-gguf.json; delete it"):
        converted_folder(source)
    assert fake_convert == []


def test_a_concurrent_conversion_that_finished_first_is_used(tmp_path, cache, monkeypatch):
    source = read_source(write_gguf(tmp_path / "a.gguf"))

    def racing(source, folder, trust_remote_code):
        winner = folder.parent / source.sha256  # another process renames its copy into place meanwhile
        winner.mkdir()
        (winner / MARKER).write_text(json.dumps(source.describe()))
        (winner / "config.json").write_text('{"winner": true}')
        folder.mkdir()
        (folder / MARKER).write_text(json.dumps(source.describe()))
        (folder / "config.json").write_text('{"winner": false}')

    monkeypatch.setattr(gguf_module, "_convert", racing)
    folder = converted_folder(source)
    assert json.loads((folder / "config.json").read_text()) == {"winner": True}
    assert [p.name for p in cache.iterdir()] == [source.sha256]


# -- a real conversion: the tiny chat model through GGUF ---------------------------------------------


def test_a_gguf_model_scores_as_its_source_folder(tiny_models, chat_backend, tmp_path, cache, caplog):
    import logging

    from harness.engine import HFBackend
    from harness.engine.base import ChoiceRequest
    from tests.conftest import collect

    path = write_llama_gguf(tiny_models["tiny-llama-chat"], tmp_path / "tiny.gguf")
    with caplog.at_level(logging.INFO, logger="harness.engine.gguf"):
        backend = HFBackend(str(path), dtype="float32", device="cpu")
    assert "converting" in caplog.text
    folder = cache / read_source(path).sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        MARKER, "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"])
    assert not list(cache.glob(".*.partial"))
    described = backend.describe()
    assert described["model"] == str(path) and described["local_path"] == str(folder)
    assert described["gguf"]["file_type"] == "F32" and described["gguf"]["sha256"] == read_source(path).sha256
    original = chat_backend.describe()["tokenizer"]
    assert described["tokenizer"]["chat_template_sha256"] == original["chat_template_sha256"] is not None
    requests = [ChoiceRequest("<s><|user|>\nIs 12 even or odd?\n<|assistant|>\n", ("even", "odd")),
                ChoiceRequest("The larger of 603 and 581 is", (" 603", " 581"))]
    ours, theirs = collect(backend.score(requests)), collect(chat_backend.score(requests))
    for index in theirs:
        assert [r.logprob for r in ours[index]] == pytest.approx([r.logprob for r in theirs[index]], abs=1e-5)

    stamp = (folder / MARKER).stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="harness.engine.gguf"):
        again = HFBackend(str(tmp_path), gguf_file="tiny.gguf", dtype="float32", device="cpu")
    assert "reusing the conversion" in caplog.text and "converting" not in caplog.text
    assert (folder / MARKER).stat().st_mtime_ns == stamp
    assert again.describe()["gguf"] == described["gguf"]


def test_cli_run_of_a_quantized_gguf_records_its_quantization(tiny_models, tmp_path, cache):
    write_llama_gguf(tiny_models["tiny-llama"], tmp_path / "q8.gguf", quantize=True)
    code = main(["run", "--model", str(tmp_path), "--gguf-file", "q8.gguf", "--tasks", "parity", "--templates",
                 "instr_terse", "--limit", "2", "--out", str(tmp_path / "runs"), "--run-id", "r"])
    assert code == 0
    model = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["model"]
    assert model["gguf"]["file_type"] == "Q8_0"
    assert model["gguf"]["tensor_types"] == {"F32": 5, "Q8_0": 16}  # 2 layers x 7 matrices + embeddings + head
    assert model["gguf"]["path"] == str((tmp_path / "q8.gguf").resolve())
