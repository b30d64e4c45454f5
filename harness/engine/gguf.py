"""GGUF checkpoints (llama.cpp's format): found, fingerprinted, and converted once into a model folder.

transformers reads a GGUF file by dequantizing every tensor with the `gguf` package, which takes
about 30 s for a 135M model on two cores and minutes for a 7B one, on every load. So the harness
converts a GGUF file once: the dequantized model (float32, the exact values the quantized blocks
stand for) and its tokenizer (with the chat template) are saved as an ordinary transformers folder,
which later runs load in seconds and which lm-eval's hf backend can load too.

The folder is keyed by the GGUF file's sha256, so a replaced or edited file never reuses a stale
conversion, and it is written under a temporary name and renamed into place once complete, so a
conversion that is killed leaves nothing a later run trusts (its leftovers are removed by the next
conversion of the same file). The run record keeps the GGUF file itself: its path, its sha256 and
its quantization, read from the file's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.engine.weights import file_sha256
from harness.errors import HarnessError
from harness.files import cache_root

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
MARKER = "harness-gguf.json"
"""Written last inside a conversion: its presence, with the right sha256, makes the folder trusted."""


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file as the run record describes it."""

    path: Path
    sha256: str
    file_type: str | None  # general.file_type as llama.cpp names it, less MOSTLY_/ALL_ ("Q4_1", "F32")
    tensor_types: dict[str, int]  # how many tensors of each GGML type ("Q4_1": 210, "F32": 61, ...)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "file_type": self.file_type,
                "tensor_types": dict(self.tensor_types)}


def gguf_path(model: str, gguf_file: str | None) -> Path | None:
    """The GGUF file that --model (and --gguf-file) name, or None when they name none.

    `--model FILE.gguf` names the file itself; `--model FOLDER --gguf-file NAME` a file in a local
    folder. Each way of getting this wrong is one line naming the flag, not a hub lookup error."""
    location = Path(os.path.expanduser(model))
    if gguf_file is None:
        if not model.endswith(".gguf"):
            return None
        path = location
    elif model.endswith(".gguf"):
        raise HarnessError(f"--gguf-file {gguf_file}: --model {model} already names a GGUF file; give the file "
                           "as --model alone, or the folder holding it as --model with --gguf-file")
    elif not location.is_dir():
        why = "is a file" if location.exists() else "is not a local folder"
        raise HarnessError(f"--gguf-file {gguf_file} needs --model FOLDER, the local folder holding the file; "
                           f"{model} {why} (or pass --model FILE.gguf alone)")
    else:
        path = location / gguf_file
    if not path.is_file():
        what = ("is a folder, not a GGUF file" if path.is_dir()
                else f"no such GGUF file ({path.resolve()} does not exist)")
        raise HarnessError(f"{path}: {what}; check the path given to --model / --gguf-file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != MAGIC:
        raise HarnessError(f"{path}: not a GGUF file (it starts with {head!r}, not {MAGIC!r}); pass a .gguf file as "
                           "llama.cpp writes it, or a model folder without --gguf-file")
    return path.resolve()


def read_source(path: Path) -> GGUFSource:
    """`path`'s sha256 and quantization (general.file_type, and the tensor types it actually holds).

    Parsing a GGUF's metadata reads every tokenizer entry (seconds for a 49k vocabulary, more on a
    busy machine), so once the file is converted its quantization is read from the conversion's
    marker, found by the file's sha256."""
    sha256 = file_sha256(path)
    marker = _marker(cache_root() / "gguf" / sha256, sha256)
    if marker is not None:
        return GGUFSource(path, sha256, marker.get("file_type"), dict(marker.get("tensor_types") or {}))
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise HarnessError(f"{path}: the GGUF file cannot be read ({_first_line(exc)}); re-download it") from None
    field = reader.fields.get("general.file_type")
    file_type = None
    if field is not None:
        value = int(field.contents())
        try:
            file_type = LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = str(value)  # a type newer than this gguf package: keep the number
    counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    return GGUFSource(path, sha256, file_type, dict(sorted(counts.items())))


def converted_folder(source: GGUFSource, *, trust_remote_code: bool = False) -> Path:
    """The transformers folder converted from `source`, converting it now when this machine has none."""
    root = cache_root() / "gguf"
    target = root / source.sha256
    if target.is_dir():
        if _trusted(target, source):
            log.info("reusing the conversion of %s in %s", source.path, target)
            return target
        raise HarnessError(f"{target}: a folder of the GGUF cache without a valid {MARKER}; delete it and rerun to "
                           "convert the GGUF file again")
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root, source.sha256)
    partial = root / f".{source.sha256}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log.info("converting %s (GGUF %s) into %s, once for this file", source.path, source.file_type, target)
    started = time.perf_counter()
    try:
        _convert(source, partial, trust_remote_code)
        try:
            partial.rename(target)
        except OSError:
            if not _trusted(target, source):  # not a concurrent conversion finishing first
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("converted %s in %.1f s", source.path, time.perf_counter() - started)
    return target


def _convert(source: GGUFSource, folder: Path, trust_remote_code: bool) -> None:
    import gguf
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(source.path.parent), source.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, NotImplementedError, OSError, TypeError) as exc:
        raise HarnessError(f"{source.path}: transformers cannot load this GGUF file ({_first_line(exc)}); it reads "
                           "the architectures its GGUF support lists") from None
    # The weights are plain dequantized tensors by now; transformers still marks the model as
    # gguf-quantized, which makes save_pretrained refuse it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # from_pretrained's own keyword (True under HF_HUB_OFFLINE) is saved with the tokenizer; the
    # folder should not depend on whether the conversion ran offline.
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    if tokenizer_config.pop("local_files_only", None) is not None:
        config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    marker = {**source.describe(), "dtype": "float32", "transformers": transformers.__version__,
              "gguf": getattr(gguf, "__version__", None) or _version("gguf")}
    (folder / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _marker(folder: Path, sha256: str) -> dict[str, Any] | None:
    """The marker of a complete conversion of the file with this sha256 in `folder`, else None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("sha256") == sha256 else None


def _trusted(folder: Path, source: GGUFSource) -> bool:
    return _marker(folder, source.sha256) is not None


def _remove_abandoned(root: Path, sha256: str) -> None:
    """Remove partial conversions of this file left by processes that no longer run (killed ones)."""
    for partial in root.glob(f".{sha256}.*.partial"):
        pid = partial.name.split(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
