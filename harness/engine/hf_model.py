"""Loading a transformers causal LM and its tokenizer for `HFBackend`, and describing them.

Kept apart from the backend's batching, scoring and generation because none of that depends on how
the weights were found: this module turns a folder, a hub id (at a --revision) or a GGUF file (via
its cached conversion, `harness.engine.gguf`) into a model on a device or spread over devices by
accelerate (--device-map, --max-memory), with one actionable line when it cannot, starts hashing
the weights in the background, and writes the model's part of the run record.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.engine.gguf import GGUFSource, converted_folder, gguf_path, read_source
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


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """How accelerate is to spread a model over devices: `device_map` (a strategy, or module name ->
    device as read from a JSON file), `max_memory` (device -> limit), and how the flag was given."""

    device_map: str | dict[str, int | str]
    max_memory: dict[int | str, str] | None
    requested: str


def parse_placement(device_map: str | None, max_memory: str | None, device: str | None) -> Placement | None:
    """--device-map and --max-memory as `from_pretrained` takes them, or None without --device-map."""
    if device_map is None:
        if max_memory is not None:
            raise HarnessError(f"--max-memory {max_memory} limits what --device-map places on each device; add "
                               "--device-map auto (or balanced, sequential)")
        return None
    if device is not None:
        raise HarnessError(f"--device {device} with --device-map {device_map}: a device map places the model "
                           "itself; give one of the two")
    limits = _parse_max_memory(max_memory) if max_memory is not None else None
    if device_map in DEVICE_MAP_STRATEGIES:
        return Placement(device_map, limits, device_map)
    path = Path(device_map)
    if not path.is_file():
        raise HarnessError(f"--device-map {device_map}: neither a strategy ({', '.join(DEVICE_MAP_STRATEGIES)}) nor "
                           "a JSON file mapping module names to devices")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HarnessError(f"--device-map {device_map}: not a JSON file ({_first_line(exc)}); write an object "
                           'such as {"model.embed_tokens": 0, "model.layers": 0, "lm_head": "cpu"}') from None
    if not isinstance(mapping, dict) or not mapping or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in mapping.values()):
        raise HarnessError(f"--device-map {device_map}: the JSON must be a non-empty object of module name -> "
                           'device (0, 1, "cpu", "disk")')
    return Placement(mapping, limits, str(path.resolve()))


def _parse_max_memory(text: str) -> dict[int | str, str]:
    """"0=20GiB,1=20GiB,cpu=64GiB" -> {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}, each size checked."""
    from accelerate.utils import convert_file_size_to_int

    limits: dict[int | str, str] = {}
    for part in text.split(","):
        device, sep, size = (p.strip() for p in part.partition("="))
        try:
            valid = bool(sep and device and size) and convert_file_size_to_int(size) > 0
        except ValueError:
            valid = False
        if not valid:
            raise HarnessError(f"--max-memory {text}: {part.strip()!r} is not DEVICE=SIZE; write e.g. "
                               "0=20GiB,1=20GiB,cpu=64GiB (GPU index, cpu or disk, then a size)")
        limits[int(device) if device.isdigit() else device] = size
    return limits


def placement_summary(placement: Placement, model: torch.nn.Module) -> dict[str, Any]:
    """The record's account of where accelerate put the model: the flags, then per device how many
    of `hf_device_map`'s modules and how many parameters (each shared tensor counted once) it holds."""
    device_map = getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
    devices: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for name, device in device_map.items():
        entry = devices.setdefault(str(device), {"modules": 0, "parameters": 0})
        entry["modules"] += 1
        for parameter in model.get_submodule(name).parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                entry["parameters"] += parameter.numel()
    return {
        "device_map": placement.requested,
        "max_memory": {str(k): v for k, v in placement.max_memory.items()} if placement.max_memory else None,
        "devices": dict(sorted(devices.items())),
    }


def default_dtype(device: torch.device) -> torch.dtype:
    """What `--dtype auto` means: float32 on a CPU; on CUDA bfloat16 where the GPU computes in it
    (Ampere and later), else float16 (a V100 or T4 emulates bfloat16 slowly or not at all)."""
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def load_causal_lm(model: str, dtype: str, device: torch.device, *, revision: str | None = None,
                   trust_remote_code: bool = False,
                   placement: Placement | None = None) -> tuple[Any, torch.nn.Module, torch.dtype]:
    """(tokenizer, model in eval mode, its dtype). Without `placement` the model is moved to `device`;
    with one accelerate places its modules (`from_pretrained(device_map=..., max_memory=...)`) and
    nothing is moved afterwards."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != "auto" and dtype not in DTYPES:
        raise HarnessError(f"--dtype {dtype!r} is not supported; use auto, {', '.join(DTYPES)}")
    torch_dtype = DTYPES.get(dtype) or default_dtype(device)
    local = Path(model).is_dir()
    if local:
        check_weight_files(Path(model))
    hub = {"revision": revision, "trust_remote_code": trust_remote_code}
    where = {}
    if placement is not None:  # copies: from_pretrained rewrites them in place (sizes become byte counts)
        where["device_map"] = dict(placement.device_map) if isinstance(placement.device_map, dict) \
            else placement.device_map
        where["max_memory"] = dict(placement.max_memory) if placement.max_memory else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, **hub)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **hub, **where)
        if placement is None:
            loaded = loaded.to(device)
    except (OSError, ValueError, KeyError) as exc:
        where_text = "" if local else ", and no such local folder exists"
        raise HarnessError(
            f"{model}: cannot load a causal LM ({_first_line(exc)}){where_text}; pass a folder with config.json, "
            "weights and tokenizer files, or a hub id when online"
        ) from None
    except SafetensorError as exc:  # a damaged file the header check cannot see, or one in the hub cache
        raise HarnessError(f"{model}: a weights file is damaged ({_first_line(exc)}); re-download or rebuild "
                           "the model") from None
    loaded.eval()
    return tokenizer, loaded, torch_dtype


@dataclass
class LoadedModel:
    """A model and tokenizer as `HFBackend` uses them, with what the run record says of their origin."""

    model_id: str  # the --model value (a GGUF file's path as given)
    folder: str  # what transformers loaded: the --model folder or hub id, or a GGUF file's conversion
    tokenizer: Any
    model: torch.nn.Module
    dtype: torch.dtype
    device: torch.device  # where inputs go: the given device, or that of the input embeddings when placed
    weights_digest: Future[str | None] | None
    revision: str | None = None
    trust_remote_code: bool = False
    gguf: GGUFSource | None = None
    placement: Placement | None = None

    def describe(self, max_length: int) -> dict[str, Any]:
        described = describe_model(self.folder, self.model, self.tokenizer, self.weights_digest, self.dtype,
                                   self.device, max_length)
        described["model"] = self.model_id
        # Keys only where their option was used, so runs without them keep their specs and run ids.
        if self.revision is not None:
            described["revision"] = self.revision
        if self.trust_remote_code:
            described["trust_remote_code"] = True
        if self.gguf is not None:
            described["gguf"] = self.gguf.describe()
        if self.placement is not None:
            described["placement"] = placement_summary(self.placement, self.model)
        return described


def load_model(model: str, *, dtype: str = "auto", device: str | None = None, gguf_file: str | None = None,
               revision: str | None = None, trust_remote_code: bool = False, device_map: str | None = None,
               max_memory: str | None = None) -> LoadedModel:
    """`harness run`'s model flags turned into a loaded model: a GGUF file converted (once) first, a
    device map and memory limits parsed, each contradiction among the flags refused in one line."""
    placement = parse_placement(device_map, max_memory, device)
    found = gguf_path(model, gguf_file)
    source = read_source(found) if found is not None else None
    if revision is not None and (source is not None or looks_like_path(model) or Path(model).is_dir()):
        raise HarnessError(f"--revision {revision} names a commit of a hub model; {model} is local, so drop it")
    folder = str(converted_folder(source, trust_remote_code=trust_remote_code)) if source else model_location(model)
    resolved = resolve_device(device)
    tokenizer, loaded, torch_dtype = load_causal_lm(folder, dtype, resolved, revision=revision,
                                                    trust_remote_code=trust_remote_code, placement=placement)
    if placement is not None:
        resolved = loaded.get_input_embeddings().weight.device
    return LoadedModel(model if source else folder, folder, tokenizer, loaded, torch_dtype, resolved,
                       start_weights_digest(folder), revision, trust_remote_code, source, placement)


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
