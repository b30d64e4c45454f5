"""Run records on disk: a durable per-sample log, resume, and the final run.json.

Layout of `results/<run-id>/`:
- `lock`: flock'ed by the run that uses the folder, and naming it (`harness.eval.rundir`).
- `spec.json`: what the run computes (model, tasks, templates, shots, seeds), written first. A
  later command with the same out directory must have the same spec, or it is refused; samples
  without a spec cannot be checked against any command, so they are refused too.
- `samples.jsonl`: one line per finished sample, appended and fsync'ed batch by batch, so a kill -9
  at any moment loses at most the batch in flight. A torn last line is dropped on resume; any other
  line that is not a sample is refused, naming its line, since dropping it (and all after it) would
  silently recompute work or hide damage.
- `samples.rank<R>.jsonl`: while a data-parallel run computes, rank R > 0 appends its samples here
  as rank 0 appends to samples.jsonl (same format, same durability). Rank 0 folds every shard into
  samples.jsonl when it opens the folder and when the ranks are done, and deletes it once folded, so
  a killed job resumes from all of them with any number of processes, one included.
- `run.json`: written last and atomically; its presence is what marks a run complete. On
  completion `samples.jsonl` is rewritten in canonical order, so a resumed run and an
  uninterrupted one end with identical files.

A write that fails (a full disk) leaves the files as they were before it and ends in one line that
says how many samples are safe on disk, so the same command resumes once there is room again.

What goes into the files, and how they read back, is `harness.eval.record`'s; whether their values
hold together is `harness.eval.verify`'s: this module decides when they are written and read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.eval.json_fields import RecordError
from harness.eval.record import RunRecord, RunSpec, Sample
from harness.eval.rundir import RunLock, check_contents, remove_run_files, shard_paths
from harness.eval.verify import check_samples, check_scores, same
from harness.files import is_disk_full, write_json_atomic

RESUME_REMEDY = "delete the line to recompute that sample, or rerun with --overwrite to start the run again"
LOAD_REMEDY = "rerun its command with --overwrite"


class SampleLog:
    """Finished samples appended durably to one file: samples.jsonl, or a data-parallel rank's shard.

    `samples` holds those this object knows of (read back or appended), so none is written twice."""

    def __init__(self, path: Path) -> None:
        self.samples_path = path
        self.samples: dict[str, Sample] = {}
        self.lines: dict[str, int] = {}
        """Each finished sample's line number in the file, for errors that name it."""
        self._line_count = 0

    def append(self, samples: Iterable[Sample]) -> None:
        """Make finished samples durable with one write and one fsync; a failed write is undone."""
        fresh = [s for s in samples if s.key not in self.samples]
        if not fresh:
            return
        payload = "".join(sample.line() + "\n" for sample in fresh)
        size = self.samples_path.stat().st_size if self.samples_path.exists() else 0

        def write() -> None:
            try:
                with self.samples_path.open("a", encoding="utf-8") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:
                _truncate(self.samples_path, size)
                raise

        self._write(self.samples_path, write)
        for sample in fresh:
            self._line_count += 1
            self.samples[sample.key], self.lines[sample.key] = sample, self._line_count

    def _write(self, path: Path, write: Any) -> None:
        """Run `write`; an OSError (a full disk) becomes one line saying what is safe on disk and what to do."""
        try:
            write()
        except OSError as exc:
            saved = f"{len(self.samples)} finished samples are on disk in {self.samples_path}"
            if is_disk_full(exc):
                raise HarnessError(f"{path}: cannot write, the disk is full ({exc.strerror or exc}); {saved}; free "
                                   "space, then rerun the same command to resume") from exc
            raise HarnessError(f"{path}: cannot write ({exc.strerror or exc}); {saved}; fix that, then rerun the "
                               "same command to resume") from exc


class RunStore(SampleLog):
    """The durable state of one run directory, which it holds locked until `close()`."""

    @staticmethod
    def completed(directory: Path, spec: RunSpec) -> tuple[RunRecord, list[Sample]] | None:
        """The record and samples of a complete run of this very spec in `directory`, else None; a complete
        run of another spec is an error (a workflow that reruns its steps must not mix two commands' runs)."""
        if not (directory / "run.json").exists():
            return None
        record, samples = load_run(directory)
        stored, wanted = record.spec.to_json(), spec.to_json()
        if {k: stored.get(k) for k in wanted} != wanted:
            raise HarnessError(f"{directory}: holds a complete run of a different command (model, tasks, templates, "
                               "shots or seed differ); remove it or choose another output folder")
        _check_spec_file(directory / "spec.json", record, required=True)
        return record, samples

    def __init__(self, directory: Path, spec: RunSpec, overwrite: bool = False, extend: bool = False) -> None:
        """`extend` reopens a complete run to add samples (a budgeted run given a larger budget): its
        run.json is removed once the folder is locked and checked, so until the new one is written
        the folder is an unfinished run that the same command resumes."""
        super().__init__(directory / "samples.jsonl")
        self.directory = directory
        self.run_path = directory / "run.json"
        check_contents(directory, overwrite)
        if not overwrite and directory.is_dir():
            self._check(spec, extend)  # a folder refused is left as it was: no lock file is made in it
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"{directory}: cannot create the run folder ({exc.strerror or exc}); choose another "
                               "--out or --run-id") from exc
        self._lock: RunLock | None = RunLock(directory)
        try:
            if overwrite:
                remove_run_files(directory)
            self._check(spec, extend)  # again, now that no other process can change the folder
            if extend and self.run_path.exists():
                self._write(self.run_path, self.run_path.unlink)
            spec_path = directory / "spec.json"
            if not spec_path.exists():
                self._write(spec_path, lambda: write_json_atomic(spec_path, spec.to_json()))
            self._recover()
            self.merge_shards()
        except BaseException:
            self.close()
            raise

    def _check(self, spec: RunSpec, extend: bool) -> None:
        """Refuse a complete run (unless extending it), another command's run, and samples without the
        spec they belong to."""
        spec_path = self.directory / "spec.json"
        if self.run_path.exists() and not extend:
            raise HarnessError(f"{self.directory}: holds a complete run; pass --overwrite to redo it or use another "
                               "--out")
        if spec_path.exists():
            try:
                previous = json.loads(spec_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise HarnessError(f"{spec_path}: is not valid JSON ({exc}); rerun with --overwrite to start the run "
                                   "again, or choose another --run-id") from None
            if previous != spec.to_json():
                raise HarnessError(f"{self.directory}: was started by a different command (model, tasks, templates, "
                                   "shots or seed differ); pass --overwrite or choose another --out")
        else:
            for path in (self.samples_path, *shard_paths(self.directory)):
                if path.exists() and path.stat().st_size:
                    raise HarnessError(f"{self.directory}: holds {path.name} but no spec.json, so its samples cannot "
                                       "be checked against this command; rerun with --overwrite to start the run "
                                       "again, or choose another --run-id")

    def _recover(self) -> None:
        """Read finished samples; drop a line torn by a crash (the last, without its newline), and
        truncate the file to match; refuse any other line that is not a sample."""
        if not self.samples_path.exists():
            return
        good_bytes = 0
        for number, line in _complete_lines(self.samples_path):
            sample = read_sample(line, self.samples_path, number, RESUME_REMEDY)
            earlier = self.samples.get(sample.key)
            if earlier is not None and not same(earlier.to_json(), sample.to_json()):
                raise HarnessError(f"{self.samples_path} line {number}: repeats sample {sample.key} of line "
                                   f"{self.lines[sample.key]} with other values; {RESUME_REMEDY}")
            if earlier is None:
                self.samples[sample.key], self.lines[sample.key] = sample, number
            good_bytes += len(line)
            self._line_count = number
        if good_bytes != self.samples_path.stat().st_size:
            self._write(self.samples_path, lambda: os.truncate(self.samples_path, good_bytes))

    def merge_shards(self) -> None:
        """Append the samples of every data-parallel shard that samples.jsonl lacks to it, then delete
        the shards. A shard's torn last line is dropped as samples.jsonl's is; a sample that differs from
        its copy elsewhere is refused, naming its line. A crash between the append and the deletions
        leaves copies that read back equal, which the next run folds again."""
        shards = shard_paths(self.directory)
        for shard in shards:
            found: dict[str, Sample] = {}
            lines: dict[str, int] = {}
            for number, line in _complete_lines(shard):
                sample = read_sample(line, shard, number, RESUME_REMEDY)
                earlier = self.samples.get(sample.key) or found.get(sample.key)
                if earlier is not None and not same(earlier.to_json(), sample.to_json()):
                    where = (f"{self.samples_path} line {self.lines[sample.key]}" if sample.key in self.samples
                             else f"line {lines[sample.key]}")
                    raise HarnessError(f"{shard} line {number}: repeats sample {sample.key} of {where} with other "
                                       f"values; {RESUME_REMEDY}")
                if earlier is None:
                    found[sample.key], lines[sample.key] = sample, number
            self.append(found.values())
        for shard in shards:
            self._write(shard, shard.unlink)

    def finalize(self, record: RunRecord, order: list[str]) -> None:
        """Rewrite samples in canonical order, then mark the run complete with run.json."""
        missing = [key for key in order if key not in self.samples]
        if missing:
            raise HarnessError(f"{self.directory}: {len(missing)} samples are missing (first: {missing[0]}); "
                               "rerun the same command to finish them")
        temporary = self.samples_path.with_name("samples.jsonl.tmp")

        def rewrite() -> None:
            try:
                with temporary.open("w", encoding="utf-8") as handle:
                    for key in order:
                        handle.write(self.samples[key].line() + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.samples_path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise

        self._write(self.samples_path, rewrite)
        self._write(self.run_path, lambda: write_json_atomic(self.run_path, record.to_json()))

    def close(self) -> None:
        """Release the run directory's lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every line that ends with its newline, up to the first that does not
    (the torn tail a crash leaves)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                return
            yield number, line


def _truncate(path: Path, size: int) -> None:
    """Cut a file back to `size` bytes after a failed append, so no partial batch stays behind."""
    try:
        os.truncate(path, size)
    except OSError:
        pass  # what is left is a torn tail, which resume drops


def read_sample(line: bytes, path: Path, number: int, remedy: str) -> Sample:
    """One line of samples.jsonl as a typed sample, or a one-line error naming the file and line."""
    try:
        raw = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path} line {number}: is not UTF-8 text (byte {exc.start + 1}); {remedy}") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path} line {number}: is not valid JSON ({exc}); {remedy}") from None
    try:
        return Sample.from_json(raw)
    except RecordError as exc:
        raise HarnessError(f"{path} line {number} {exc}; {remedy}") from None


def _check_spec_file(spec_path: Path, record: RunRecord, required: bool) -> None:
    """A complete run's spec.json must be the spec inside its run.json (one of the two was damaged)."""
    if not spec_path.exists():
        if required:
            raise HarnessError(f"{spec_path}: missing beside run.json; the run folder is damaged ({LOAD_REMEDY})")
        return
    try:
        stored = json.loads(spec_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HarnessError(f"{spec_path}: is not valid JSON ({exc}); the run folder is damaged "
                           f"({LOAD_REMEDY})") from None
    if stored != record.spec.to_json():
        raise HarnessError(f"{spec_path}: differs from the spec inside run.json; the run folder is damaged "
                           f"({LOAD_REMEDY})")


def load_run(directory: Path) -> tuple[RunRecord, list[Sample]]:
    """A complete run's record and samples, for analysis and comparison, once they are checked to hold
    together (`harness.eval.verify`): a damaged or edited file is refused, never reported."""
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
        record = RunRecord.from_json(json.loads(run_path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise HarnessError(f"{run_path}: not valid JSON ({exc}); rerun its command with --overwrite") from None
    except RecordError as exc:
        raise HarnessError(f"{run_path} {exc}; rerun its command with --overwrite") from None
    with samples_path.open("rb") as handle:
        samples = [read_sample(line, samples_path, number, LOAD_REMEDY) for number, line in enumerate(handle, 1)]
    _check_spec_file(directory / "spec.json", record, required=False)
    check_samples(samples, samples_path, LOAD_REMEDY)
    check_scores(record, samples, run_path, LOAD_REMEDY)
    return record, samples
