"""Loading a transformers causal LM and its tokenizer for `HFBackend`, and describing them.

Kept apart from the backend's batching, scoring and generation because none of that depends on how
the weights were found: this module turns a folder or hub id into a model on a device (with one
actionable line when it cannot), starts hashing the weights in the background, and writes the
model's part of the run record.

What fails here fails before any work, so each failure a user can cause (a device the machine lacks,
a mistyped folder, a damaged weights file) is checked up front and named in one line, instead of a
torch or safetensors traceback, or transformers' reading of a missing folder as a malformed hub id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from harness.engine.weights import TOKENIZER_PATTERNS, WEIGHTS_PATTERNS, files_digest
from harness.errors import HarnessError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What the hub accepts as a model id: `name` or `owner/name`.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_device(device: str | None) -> torch.device:
    """`device` as a torch device (default: cuda when present, else cpu), or a one-line error when
    this machine has no such device (torch would fail later, at the first tensor moved to it)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise HarnessError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise HarnessError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise HarnessError(f"--device {device}: no such device, this machine has {count} CUDA device(s) "
                               f"(cuda:0 to cuda:{count - 1}); use one of them or --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise HarnessError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return resolved


def looks_like_path(model: str) -> bool:
    """Whether `model` can only mean a local path: it starts with "." or "~", ends with ".gguf", is
    absolute, or has a path separator that no hub id (`name` or `owner/name`) has."""
    if model.startswith((".", "~")) or model.endswith(".gguf") or os.path.isabs(model):
        return True
    separators = {"/", os.sep, os.altsep or "/"}
    return any(sep in model for sep in separators) and not _HUB_ID.fullmatch(model)


def model_location(model: str) -> str:
    """`model` with a leading "~" expanded; a one-line error when it can only be a local path and
    names no model folder (transformers would take it for a malformed hub id)."""
    path = os.path.expanduser(model) if model.startswith("~") else model
    if not looks_like_path(model) or Path(path).is_dir():
        return path
    if Path(path).exists():
        raise HarnessError(f"{model}: cannot load a causal LM, it is a file, not a model folder; pass the folder "
                           "that holds config.json, the weights and the tokenizer files")
    raise HarnessError(f"{model}: cannot load a causal LM, no such model folder ({Path(path).resolve()} does not "
                       "exist); check the path, or give a hub id such as owner/name")


def check_weight_files(folder: Path) -> None:
    """A one-line error naming the first damaged `*.safetensors` file of `folder` (cut short, or not
    a safetensors file), read from its header alone: safetensors would fail with a traceback."""
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        problem = None
        with path.open("rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else None
            if length is None or 8 + length > size:
                problem = f"{size} bytes, shorter than its header says"
            else:
                try:
                    header = json.loads(handle.read(length))
                    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                    problem = "its header is not safetensors metadata"
                else:
                    if 8 + length + end > size:
                        problem = f"{size} bytes of the {8 + length + end} its header lists"
        if problem:
            raise HarnessError(f"{path}: the weights file is damaged ({problem}); re-download or rebuild the model")


def attention_pair_cost(model: torch.nn.Module) -> float:
    """What attention over one query-key pair costs, in token positions: 4 x hidden FLOPs per layer
    (scores, then the weighted sum) against 2 FLOPs per weight of the body for a position. About
    0.002 for the built-in tiny model, 7e-5 for a 1B Llama; 0 where the config does not say."""
    config = model.config
    hidden = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if not getattr(config, "tie_word_embeddings", False):
        body -= model.get_output_embeddings().weight.numel()
    if not isinstance(hidden, int) or not isinstance(layers, int) or body <= 0:
        return 0.0
    return 2 * hidden * layers / body


def load_causal_lm(model: str, dtype: str, device: torch.device) -> tuple[Any, torch.nn.Module, torch.dtype]:
    """(tokenizer, model in eval mode on `device`, its dtype); `dtype` "auto" is float32 on a CPU, else bfloat16."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != "auto" and dtype not in DTYPES:
        raise HarnessError(f"--dtype {dtype!r} is not supported; use auto, {', '.join(DTYPES)}")
    torch_dtype = DTYPES.get(dtype, torch.float32 if device.type == "cpu" else torch.bfloat16)
    local = Path(model).is_dir()
    if local:
        check_weight_files(Path(model))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device)
    except (OSError, ValueError, KeyError) as exc:
        where = "" if local else ", and no such local folder exists"
        raise HarnessError(
            f"{model}: cannot load a causal LM ({_first_line(exc)}){where}; pass a folder with config.json, "
            "weights and tokenizer files, or a hub id when online"
        ) from None
    except SafetensorError as exc:  # a damaged file the header check cannot see, or one in the hub cache
        raise HarnessError(f"{model}: a weights file is damaged ({_first_line(exc)}); re-download or rebuild "
                           "the model") from None
    loaded.eval()
    return tokenizer, loaded, torch_dtype


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def start_weights_digest(model: str) -> Future[str | None] | None:
    """The sha256 of a local model's weight files, computed in a thread; None for a hub id.

    Hashing takes ~1 s per GB. A thread (hashlib releases the GIL) overlaps it with the run's task
    loading and planning instead of delaying the first request; `describe_model` waits for it.
    """
    if not Path(model).is_dir():
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-sha256")
    digest = pool.submit(files_digest, Path(model), WEIGHTS_PATTERNS)
    pool.shutdown(wait=False)  # the thread ends with the hash
    return digest


def describe_model(model_id: str, model: torch.nn.Module, tokenizer: Any, weights_digest: Future[str | None] | None,
                   dtype: torch.dtype, device: torch.device, max_length: int) -> dict[str, Any]:
    """Model, tokenizer, weights hash, dtype and device, for the run record."""
    folder = Path(model_id)
    local = folder.is_dir()
    chat_template = getattr(tokenizer, "chat_template", None)
    return {
        "model": model_id,
        "local_path": str(folder.resolve()) if local else None,
        "weights_sha256": weights_digest.result() if weights_digest else None,
        "hub_commit": getattr(model.config, "_commit_hash", None),
        "architecture": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "files_sha256": files_digest(folder, TOKENIZER_PATTERNS)
            if local else None,
            "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest()[:16]
            if isinstance(chat_template, str) else None,
        },
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "max_length": max_length,
    }
