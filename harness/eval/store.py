"""Run records on disk: a durable per-sample log, resume, and the final run.json.

Layout of `results/<run-id>/`:
- `spec.json`: what the run computes (model, tasks, templates, shots, seeds), written first. A
  later command with the same out directory must have the same spec, or it is refused.
- `samples.jsonl`: one line per finished sample, appended and fsync'ed batch by batch, so a kill -9
  at any moment loses at most the batch in flight. A torn last line is dropped on resume.
- `run.json`: written last and atomically; its presence is what marks a run complete. On
  completion `samples.jsonl` is rewritten in canonical order, so a resumed run and an
  uninterrupted one end with identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import write_json_atomic


class RunStore:
    """The durable state of one run directory."""

    @staticmethod
    def completed(directory: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
        """The record of a complete run of this very spec in `directory`, else None; a complete run of
        another spec is an error (a workflow that reruns its steps must not mix two commands' runs)."""
        if not (directory / "run.json").exists():
            return None
        record, _ = load_run(directory)
        if {k: record.get(k) for k in spec} != json.loads(json.dumps(spec)):
            raise HarnessError(f"{directory}: holds a complete run of a different command (model, tasks, templates, "
                               "shots or seed differ); remove it or choose another output folder")
        return record

    def __init__(self, directory: Path, spec: dict[str, Any], overwrite: bool = False) -> None:
        self.directory = directory
        self.samples_path = directory / "samples.jsonl"
        self.run_path = directory / "run.json"
        spec_path = directory / "spec.json"
        spec = json.loads(json.dumps(spec))  # compare as stored: tuples become lists
        if overwrite and directory.exists():
            shutil.rmtree(directory)
        if self.run_path.exists():
            raise HarnessError(f"{directory}: holds a complete run; pass --overwrite to redo it or use another --out")
        directory.mkdir(parents=True, exist_ok=True)
        if spec_path.exists():
            try:
                previous = json.loads(spec_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = None
            if previous != spec:
                raise HarnessError(f"{directory}: was started by a different command (model, tasks, templates, "
                                   "shots or seed differ); pass --overwrite or choose another --out")
        else:
            write_json_atomic(spec_path, spec)
        self.samples: dict[str, dict[str, Any]] = self._recover()

    def _recover(self) -> dict[str, dict[str, Any]]:
        """Read finished samples; drop a line torn by a crash, and truncate the file to match."""
        if not self.samples_path.exists():
            return {}
        samples: dict[str, dict[str, Any]] = {}
        good_bytes = 0
        with self.samples_path.open("rb") as handle:
            for line in handle:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line")
                    record = json.loads(line)
                except ValueError:
                    break
                samples[record["key"]] = record
                good_bytes += len(line)
        if good_bytes != self.samples_path.stat().st_size:
            with self.samples_path.open("r+b") as handle:
                handle.truncate(good_bytes)
        return samples

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Make finished samples durable with one write and one fsync."""
        fresh = [r for r in records if r["key"] not in self.samples]
        if not fresh:
            return
        payload = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in fresh)
        with self.samples_path.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        for record in fresh:
            self.samples[record["key"]] = record

    def finalize(self, record: dict[str, Any], order: list[str]) -> None:
        """Rewrite samples in canonical order, then mark the run complete with run.json."""
        missing = [key for key in order if key not in self.samples]
        if missing:
            raise HarnessError(f"{self.directory}: {len(missing)} samples are missing (first: {missing[0]}); "
                               "rerun the same command to finish them")
        temporary = self.samples_path.with_name("samples.jsonl.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for key in order:
                handle.write(json.dumps(self.samples[key], sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.samples_path)
        write_json_atomic(self.run_path, record)


def load_run(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A complete run's record and samples, for analysis and comparison."""
    if not directory.is_dir():
        raise HarnessError(f"{directory}: no such run folder; pass a folder that `harness run` wrote")
    run_path = directory / "run.json"
    if not run_path.exists() and not (directory / "spec.json").exists():
        raise HarnessError(f"{directory}: not a run folder (no run.json); pass a folder that `harness run` wrote")
    if not run_path.exists():
        raise HarnessError(f"{directory}: no run.json; the run is incomplete (rerun its command to finish it)")
    samples_path = directory / "samples.jsonl"
    if not samples_path.exists():
        raise HarnessError(f"{samples_path}: missing beside run.json; the run folder is damaged (rerun its command "
                           "with --overwrite)")
    try:
        record = json.loads(run_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{run_path}: not valid JSON ({exc}); rerun its command with --overwrite") from None
    if not isinstance(record, dict) or not isinstance(record.get("scores"), list):
        raise HarnessError(f"{run_path}: not a run record (no 'scores' list); pass a folder that `harness run` wrote")
    samples = []
    with samples_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                samples.append(json.loads(line))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HarnessError(f"{samples_path} line {number}: not valid JSON ({exc}); "
                                   "rerun its command with --overwrite") from None
    return record, samples
