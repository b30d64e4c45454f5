"""Where a run directory is, whose it is, and which process is using it.

A run id names one folder directly inside `--out`. `harness run --run-id /some/dir --overwrite` once
deleted a user's folder, and `--run-id ../x` wrote beside `--out`, so a run id is a plain folder name,
and `--overwrite` removes only the files a run writes, from a folder that holds a run record this
harness can read: a folder with anything else in it is never cleared. A folder that holds no run
record and is not empty is the user's, and no run writes into it at all.

Two processes running one command on one folder would both compute every sample and append each
twice, so a run holds an exclusive `flock` on the folder's `lock` file from start to end, and writes
its pid, host and start time into it for the refusal to name. The kernel drops a flock when its
process dies, so a run killed with kill -9 leaves nothing to clean up: the file's text then names a
process that is gone, and the next run takes the lock and resumes.

A data-parallel run (`harness.eval.distributed`) is one run in one folder: its rank 0 holds the lock
for all its processes, and every other rank appends only to its own shard, `samples.rank<R>.jsonl`,
which it opens after rank 0 has the lock and stops writing before rank 0 merges it. A second job is
refused by the lock before any of its ranks writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import IO

from harness.errors import HarnessError
from harness.eval.record import RunRecord, RunSpec, Sample

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RECORD_FILES = ("spec.json", "samples.jsonl", "run.json")
LOCK_FILE = "lock"
OWN_FILES = frozenset({*RECORD_FILES, LOCK_FILE, *(name + ".tmp" for name in RECORD_FILES)})
"""Every name a run writes into its folder (the temporaries of atomic writes included), besides shards."""
SHARD = re.compile(r"samples\.rank(\d+)\.jsonl")
"""The samples one rank of a data-parallel run appends, merged into samples.jsonl by rank 0."""


def shard_name(rank: int) -> str:
    return f"samples.rank{rank}.jsonl"


def shard_paths(directory: Path) -> list[Path]:
    """The shards in `directory`, by rank (plain files only: anything else is not a run's)."""
    found = [(int(match.group(1)), entry) for entry in directory.glob("samples.rank*.jsonl")
             if (match := SHARD.fullmatch(entry.name)) and entry.is_file() and not entry.is_symlink()]
    return [entry for _, entry in sorted(found)]


def is_own_file(name: str) -> bool:
    """Whether a run may have written `name` (what `--overwrite` may remove)."""
    return name in OWN_FILES or SHARD.fullmatch(name) is not None


def check_run_id(run_id: str) -> None:
    """Refuse a run id that is not one plain folder name, before anything is written."""
    problem = None
    if run_id in ("", ".", ".."):
        problem = "is not a folder name"
    elif any(sep and sep in run_id for sep in ("/", "\\", os.sep, os.altsep)) or Path(run_id).is_absolute():
        problem = "is a path"
    elif "\0" in run_id:
        problem = "contains a NUL character"
    if problem:
        raise HarnessError(f"--run-id {run_id!r} {problem}; give a plain folder name (such as 'my-run'), "
                           "which is made inside --out")


def check_out(out: Path) -> None:
    """Refuse an `--out` that is an existing file (run directories are made inside it)."""
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out}: is a file, not a folder; pass a folder to hold the run directories")


def run_directory(out: Path, run_id: str) -> Path:
    """The run directory `out/run_id`, once the id, `out` and the directory itself are checked."""
    check_run_id(run_id)
    check_out(out)
    directory = out / run_id
    if directory.is_symlink():
        raise HarnessError(f"{directory}: is a symbolic link; a run directory is a real folder inside --out, "
                           "so choose another --run-id")
    if directory.exists() and not directory.is_dir():
        raise HarnessError(f"{directory}: is a file, not a run folder; choose another --run-id or --out")
    return directory


def _reads_as_record(path: Path) -> bool:
    """Whether the file is one of this harness's run files (what `--overwrite` may remove)."""
    try:
        if path.name == "samples.jsonl":
            with path.open("rb") as handle:
                Sample.from_json(json.loads(handle.readline()))
        elif path.name == LOCK_FILE:
            text = path.read_text(encoding="utf-8")
            return not text.strip() or "pid" in json.loads(text)
        else:
            reader = RunSpec.from_json if path.name == "spec.json" else RunRecord.from_json
            reader(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, HarnessError):
        return False
    return True


def check_contents(directory: Path, overwrite: bool) -> None:
    """Refuse a folder that is not this harness's run folder before anything is written into it, and,
    with `overwrite`, one that holds anything besides its run files.

    A folder holding only files with a run's names, none of which reads as a run record, is left to
    the spec check (it refuses a different command's folder); `overwrite` refuses to clear it."""
    if not directory.is_dir():
        return
    entries = sorted(directory.iterdir())
    if not entries:
        return
    foreign = [entry.name for entry in entries
               if not is_own_file(entry.name) or entry.is_symlink() or not entry.is_file()]
    ours = any(_reads_as_record(directory / name) for name in (*RECORD_FILES, LOCK_FILE)
               if (directory / name).is_file() and not (directory / name).is_symlink())
    if not ours and (foreign or overwrite):
        raise HarnessError(f"{directory}: is not empty and holds no run record of this harness "
                           f"(it holds {(foreign or [entries[0].name])[0]!r}), so no run writes into it or clears it; "
                           "choose another --run-id or --out")
    if foreign and overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise HarnessError(f"{directory}: holds files that are not part of its run ({foreign[0]!r}{more}), and "
                           "--overwrite removes only a run's own files from a folder that holds nothing else; move "
                           "them elsewhere, or choose another --run-id")


def remove_run_files(directory: Path) -> None:
    """`--overwrite`: delete the run's own files (shards too), once `check_contents` found nothing else
    (the lock stays: this process holds it)."""
    for name in sorted(OWN_FILES - {LOCK_FILE}):
        (directory / name).unlink(missing_ok=True)
    for shard in shard_paths(directory):
        shard.unlink()


class RunLock:
    """An exclusive flock on `directory/lock`, held from `RunLock(directory)` until `release()`.

    The open file object holds the lock, so a lock that is never released explicitly goes when the
    object is collected, or at the latest when the process ends (kill -9 included)."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_FILE
        self._handle: IO[str] | None = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
        if fcntl is None:
            return
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._handle.read()
            self.release()
            raise HarnessError(f"{directory}: is in use by another harness run ({_describe(holder)}); wait for it "
                               "to finish or stop that process, then rerun the same command") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_unix": time.time(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        try:
            self._handle.truncate(0)
            self._handle.write(json.dumps(info, sort_keys=True) + "\n")
            self._handle.flush()
        except OSError as exc:  # the flock is what protects the run; its text only names the holder
            log.warning("%s: cannot record which process holds the lock (%s)", path, exc.strerror or exc)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _describe(holder: str) -> str:
    """The holder as its lock file names it: pid, host and start time."""
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, TypeError, KeyError):
        return "its lock file does not name the process yet"
