"""Fingerprints of a model folder's files, so a run record or a training manifest pins exact weights,
and the cache folder that models built or converted on this machine live in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

WEIGHTS_PATTERNS = ("*.safetensors", "*.bin")
"""The files `weights_sha256` covers (run records, training manifests)."""
TOKENIZER_PATTERNS = ("tokenizer*.json", "*.model", "special_tokens_map.json")


def files_digest(folder: Path, patterns: Sequence[str]) -> str | None:
    """sha256 over the named files of a model folder, so a run record pins the exact weights."""
    files = sorted(f for p in patterns for f in folder.glob(p) if f.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The full sha256 of one file, read in blocks (a GGUF file is hundreds of MB to many GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
