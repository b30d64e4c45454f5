"""Rows for a task: from a registered generator or loader, local files, or the hub, and few-shot pools.

Local files go through `datasets`, so any format it reads works (JSON lines, JSON, CSV, TSV,
Parquet, text). Hub ids are used only when asked for and reachable; offline, the error says how to
point the task at local files instead. Whatever the source, the rows are then mapped by the task's
`layouts:` (see `layouts`), so a release's own files read like the hub's.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.tasks.layouts import apply_layout
from harness.tasks.schema import Task
from harness.tasks.sources import generate_rows, get_loader

log = logging.getLogger(__name__)

_FORMATS = {
    ".json": ("json", {}), ".jsonl": ("json", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}), ".txt": ("text", {}), ".arrow": ("arrow", {}),
}

_SPLIT_ALIASES = {"validation": ("validation", "val", "dev"), "test": ("test",), "train": ("train",)}


@dataclass(frozen=True)
class DataOverrides:
    """Local folders that replace a task's declared source for one run.

    `roots` (--data-dir) are searched for a sub-folder named after the task or its hub subset (so a
    folder of SuperGLUE exports serves rte, cb and copa at once); `folders` (--data TASK=FOLDER)
    name one task's folder explicitly. Inside a folder, a split's rows are the file named after the
    split (validation may be val or dev; a round's dev_r1 may be dev), or the folder's only data file.
    """

    roots: tuple[str, ...] = ()
    folders: tuple[tuple[str, str], ...] = ()

    def folder_for(self, task: Task) -> Path | None:
        explicit = dict(self.folders)
        if task.name in explicit:
            folder = Path(explicit[task.name])
            if not folder.is_dir():
                raise HarnessError(f"--data {task.name}={folder}: not a folder; give the folder holding its rows")
            return folder
        names = [n for n in (task.name, task.data.hub_name) if n]
        for root in self.roots:
            for name in names:
                if (Path(root) / name).is_dir():
                    return Path(root) / name
        return None


def _split_names(split: str) -> tuple[str, ...]:
    """File names a split may have: its aliases, and for a per-round split (ANLI's dev_r1) also its
    base name, as a release's round folder (anli_v1.0/R1/) names its files dev, train and test."""
    names = _SPLIT_ALIASES.get(split, (split,))
    base = re.sub(r"_r\d+$", "", split)
    return names + ((base,) if base != split else ())


def split_file(folder: Path, split: str) -> str:
    """The file holding `split` in a local folder (see `DataOverrides`)."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _FORMATS)
    for alias in _split_names(split):
        for file in files:
            if file.stem == alias:
                return str(file)
    if len(files) == 1:
        return str(files[0])
    looked = ", ".join(f"{a}.*" for a in _split_names(split))
    raise HarnessError(f"{folder}: no file for split {split!r} (looked for {looked}); rename the file")


@dataclass(frozen=True)
class Split:
    """The rows of one split, each with a stable id (the task's id field, else its position)."""

    task: str
    name: str
    rows: tuple[dict[str, Any], ...]
    ids: tuple[str, ...]
    columns: tuple[str, ...]
    origin: str

    def __len__(self) -> int:
        return len(self.rows)


def _load_file(path: str, split: str) -> list[dict[str, Any]]:
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise HarnessError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(sorted(_FORMATS))}")
    if not Path(path).is_file():
        raise HarnessError(f"{path}: data file not found; fix 'data.files' in the task file")
    if Path(path).stat().st_size < 64 and not Path(path).read_bytes().strip():
        return []  # `datasets` cannot infer a schema from nothing; the caller reports the empty split
    datasets = quiet_datasets()
    builder, options = _FORMATS[suffix]
    try:  # rows are read inside too: some formats decode (and fail) only as rows are read
        return [dict(r) for r in datasets.load_dataset(builder, data_files={split: path}, split=split, **options)]
    except Exception as exc:  # datasets raises many types for unreadable files
        cause = exc.__cause__ or exc  # datasets wraps the parser's own error, which says where the file is bad
        detail = (str(cause).strip().splitlines() or [""])[0]
        raise HarnessError(f"{path}: cannot read as {builder} ({type(cause).__name__}: {detail}); "
                           "fix the file") from None


def quiet_datasets() -> Any:
    """`datasets`, with its progress bars and its own log lines off: the library never draws on the
    terminal (the CLI does), and a file it cannot read reaches the user as one HarnessError line."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    return datasets


def _load_hub(task: Task, split: str) -> list[dict[str, Any]]:
    datasets = quiet_datasets()

    try:
        dataset = datasets.load_dataset(task.data.hub_path, task.data.hub_name, split=split)
    except Exception as exc:  # offline, unknown id, unknown split: all end the same way for the user
        raise HarnessError(
            f"{task.path}: cannot load {task.data.origin} split {split!r} ({type(exc).__name__}); "
            "when offline, point the task at local rows with --data-dir DIR or --data TASK=FOLDER"
        ) from None
    return [dict(r) for r in dataset]


def load_split(
    task: Task, split: str, limit: int | None = None, overrides: DataOverrides | None = None
) -> Split:
    """Load one split of a task; the first `limit` rows when a limit is given (of each member task,
    for a family that declares `data.limit_by`)."""
    source = task.data
    folder = overrides.folder_for(task) if overrides else None
    origin = source.origin
    if source.loader:
        rows = get_loader(source.loader)(task, split, folder)
        origin = f"{source.loader} loader" + (f" on {folder}" if folder else "")
    elif folder is not None:
        path = split_file(folder, split)
        rows = _load_file(path, split)
        origin = f"local file {path}"
    elif source.generator:
        if split not in source.sizes:
            raise HarnessError(f"{task.path}: field 'data.sizes' has no row count for split {split!r}")
        rows = generate_rows(source.generator, source.seed, split, source.sizes[split])
    elif source.files:
        if split not in source.files:
            raise HarnessError(f"{task.path}: field 'data.files' has no file for split {split!r}")
        rows = _load_file(source.files[split], split)
    else:
        rows = _load_hub(task, split)
    if not rows:
        raise HarnessError(f"{task.path}: split {split!r} of {origin} is empty; point the task at rows")
    if limit is not None and not source.limit_by:
        rows = rows[:limit]
    rows = apply_layout(task, rows, f"{origin} split {split!r}")  # before ids: a layout may map the id field
    if limit is not None and source.limit_by:
        rows = _first_of_each(task, rows, source.limit_by, limit)
    if source.id_field:
        missing = [i for i, r in enumerate(rows) if r.get(source.id_field) is None]
        if missing:
            raise HarnessError(f"{task.path}: row {missing[0]} of split {split!r} lacks id field "
                               f"{source.id_field!r}; fix the data or 'data.id_field'")
        ids = tuple(str(r[source.id_field]) for r in rows)
        if len(set(ids)) != len(ids):
            raise HarnessError(f"{task.path}: id field {source.id_field!r} repeats in split {split!r}; "
                               "ids must be unique")
    else:
        ids = tuple(str(i) for i in range(len(rows)))
    columns = tuple(dict.fromkeys(k for r in rows for k in r))
    return Split(task.name, split, tuple(rows), ids, columns, f"{origin} split {split!r}")


def _first_of_each(task: Task, rows: list[dict[str, Any]], field: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows of each value of `field`, in the rows' own order."""
    taken: dict[Any, int] = {}
    kept = []
    for number, row in enumerate(rows):
        if field not in row:
            raise HarnessError(f"{task.path}: row {number} has no field {field!r}, which 'data.limit_by' names; "
                               "fix 'data.limit_by' or the rows")
        if taken.get(row[field], 0) < limit:
            taken[row[field]] = taken.get(row[field], 0) + 1
            kept.append(row)
    return kept


class FewshotSampler:
    """Exemplars from a few-shot split, never including the row being evaluated.

    A random draw for a row depends only on (seed, task, row id), not on the order rows are visited,
    so a resumed run and an uninterrupted one show the model exactly the same prompts, and every
    template of a row gets the same exemplars (which keeps template comparisons paired). With
    `first_n`, every row gets the pool's first k rows (the evaluated row skipped), so all rows of a
    template share one few-shot preamble, which the engine then computes once per batch.
    """

    def __init__(self, pool: Split, seed: int, same_split_as_eval: bool, first_n: bool = False) -> None:
        self.pool = pool
        self.seed = seed
        self.same_split = same_split_as_eval
        self.first_n = first_n

    def sample(self, row_id: str, k: int) -> list[tuple[str, dict[str, Any]]]:
        if k == 0:
            return []
        candidates = [i for i, pid in enumerate(self.pool.ids) if not (self.same_split and pid == row_id)]
        if len(candidates) < k:
            raise HarnessError(
                f"task {self.pool.task!r}: {k}-shot needs {k} exemplars but the few-shot split "
                f"{self.pool.name!r} has {len(candidates)}; lower --shots or give more rows"
            )
        # One shuffle per row, truncated to k: the 1-shot exemplar is the first of the 5-shot ones.
        if not self.first_n:
            random.Random(f"{self.seed}:{self.pool.task}:{row_id}").shuffle(candidates)
        return [(self.pool.ids[i], self.pool.rows[i]) for i in candidates[:k]]
