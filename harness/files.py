"""Where the project's own files are, and how records are fingerprinted and written.

The lowest layer: every other module may use it, it uses none of them. The built-in tasks and
templates live in the top-level `tasks/` and `templates/` folders of the source tree; the wheel
carries them as the package data `harness/builtin_tasks/` and `harness/builtin_templates/` (the
build maps the packages `harness.builtin_tasks` and `harness.builtin_templates` to those folders).
`BUILTIN_TASKS` and `BUILTIN_TEMPLATES` are the installed folders when they exist, else the
top-level ones (a source checkout or an editable install), so either finds them from any working
directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout (for its git commit); in an installed wheel, the folder holding `harness/`."""
BUILTIN_TASKS = (
    PROJECT_ROOT / "harness" / "builtin_tasks" if (PROJECT_ROOT / "harness" / "builtin_tasks").is_dir()
    else PROJECT_ROOT / "tasks"
)
"""The built-in task files: the wheel's `harness/builtin_tasks/`, else the source tree's `tasks/`."""
BUILTIN_TEMPLATES = (
    PROJECT_ROOT / "harness" / "builtin_templates" if (PROJECT_ROOT / "harness" / "builtin_templates").is_dir()
    else PROJECT_ROOT / "templates"
)
"""The built-in templates, one folder per task: the wheel's `harness/builtin_templates/`, else `templates/`."""


def cache_root() -> Path:
    """Where the harness keeps what it builds or saves between runs: $HARNESS_CACHE, else
    ~/.cache/harness (tests point it at a temporary folder)."""
    env = os.environ.get("HARNESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "harness"


def short_hash(data: bytes) -> str:
    """The 16-hex-digit sha256 prefix used for every content hash in run records."""
    return hashlib.sha256(data).hexdigest()[:16]


RECORDED_PACKAGES = ("harness", "torch", "transformers", "tokenizers", "lm_eval", "datasets", "numpy", "jinja2")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file; a write that fails
    (a full disk, an interrupt) leaves the old file as it was and removes the temporary."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # the original error is the one to report
        raise


def is_disk_full(error: OSError) -> bool:
    """Whether a failed write means there is no room left (a full disk, or an exhausted quota), which
    the user fixes by freeing space rather than by changing the command."""
    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def environment_info(project_root: Path) -> dict[str, Any]:
    """Package versions and the git commit (with a dirty flag) the run was made with."""
    versions = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    git: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True,
                                timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root,
                                capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            git = {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"python": sys.version.split()[0], "packages": versions, "git": git}
