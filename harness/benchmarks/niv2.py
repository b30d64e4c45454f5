"""Super-NaturalInstructions (NIv2, Wang et al. 2022) as a held-out benchmark: rows and scoring.

Rows (`load_rows`) come from the official task files (`tasks/<name>.json` of allenai/natural-instructions)
in a local folder, restricted to the default test split (`test_tasks.txt`, 119 tasks) and the first
100 instances of each task, which is the evaluation set of the paper and of Tk-Instruct's
`--max_num_instances_per_eval_task 100`. Each row carries the task's definition and its positive and
negative examples, so the paper's instruction encodings are plain templates (templates/niv2/).

Rows are interleaved across tasks (instance 0 of every task, then instance 1, ...), so samples of
every task and category are written early in a run. `--limit N` keeps the first N instances of each
task (the task file's `data.limit_by: task_name`), as the paper's first-100 protocol does.

Scoring (`niv2_metric`) is Tk-Instruct's `src/compute_metrics.py`, the official scorer: exact match
after NIv2's normalisation (SQuAD's without the article removal) and rouge-score's ROUGE-L
F-measure with the Porter stemmer on the raw strings, each the maximum over the references.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.metrics import register_metric, rouge_l
from harness.tasks.rows import quiet_datasets
from harness.tasks.schema import Task
from harness.tasks.sources import register_loader

log = logging.getLogger(__name__)

DEFAULT_INSTANCES_PER_TASK = 100
TEST_LIST = "test_tasks.txt"
# The hub copy tried when no folder is given: the NIv2 splits as JSON lines, one file per task under
# test/ (fields task_name, id, definition, inputs, targets; a row per reference). It has no examples
# and no categories, so only the local task files give the whole benchmark.
HUB_ID = "Muennighoff/natural-instructions"

_PUNCTUATION = set(string.punctuation)
_OPTIONS = {"instances_per_task", "tasks", "interleave"}
_FOLDER_HINT = "pass --data niv2=FOLDER (a folder holding tasks/<name>.json and test_tasks.txt)"


# -- rows ---------------------------------------------------------------------------------------------


@register_loader("niv2")
def load_rows(task: Task, split: str, folder: Path | None) -> list[dict[str, Any]]:
    """The rows of the NIv2 test set, from `folder` (or the hub copy when no folder is given).

    `folder` holds `tasks/*.json` (and usually `test_tasks.txt`), or is the tasks folder itself. Loader
    options (`data.options` in the task file): `instances_per_task` (default 100), `tasks` (a list of
    task names that replaces test_tasks.txt) and `interleave` (default true).
    """
    if split != "test":
        raise HarnessError(f"{task.path}: NIv2 has only the 'test' split (asked for {split!r}); its examples "
                           "are part of the instruction, so use a template with examples instead of --shots")
    per_task, listed, interleave = _options(task)
    if folder is None:
        by_task = _hub_rows(task, per_task, listed)
    else:
        by_task = _folder_rows(task, Path(folder), per_task, listed)
    if interleave:
        return [row for group in zip_longest(*by_task) for row in group if row is not None]
    return [row for rows in by_task for row in rows]


def _options(task: Task) -> tuple[int, list[str] | None, bool]:
    options = task.data.loader_options
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise HarnessError(f"{task.path}: unknown niv2 loader option {unknown[0]!r} in 'data.options'; "
                           f"allowed: {', '.join(sorted(_OPTIONS))}")
    per_task = options.get("instances_per_task", DEFAULT_INSTANCES_PER_TASK)
    if not isinstance(per_task, int) or isinstance(per_task, bool) or per_task < 1:
        raise HarnessError(f"{task.path}: 'data.options.instances_per_task' must be a positive integer, "
                           f"got {per_task!r}")
    listed = options.get("tasks")
    if listed is not None and not (isinstance(listed, list) and listed and all(isinstance(n, str) for n in listed)):
        raise HarnessError(f"{task.path}: 'data.options.tasks' must be a non-empty list of NIv2 task names")
    interleave = options.get("interleave", True)
    if not isinstance(interleave, bool):
        raise HarnessError(f"{task.path}: 'data.options.interleave' must be true or false, got {interleave!r}")
    return per_task, listed, interleave


def _locate(folder: Path) -> tuple[Path, Path | None]:
    """The folder of task files and the test list, in the layouts people actually have on disk.

    Accepted: FOLDER/tasks/*.json with FOLDER/test_tasks.txt (the shared data layout), a clone of
    allenai/natural-instructions (FOLDER/tasks, FOLDER/splits/default/test_tasks.txt), or the tasks
    folder itself with the list beside it or in its parent.
    """
    tasks_dir = folder / "tasks" if (folder / "tasks").is_dir() else folder
    roots = [folder] if tasks_dir != folder else [folder, folder.parent]
    for root in roots:
        for candidate in (root / TEST_LIST, root / "splits" / "default" / TEST_LIST):
            if candidate.is_file():
                return tasks_dir, candidate
    return tasks_dir, None


def _read_list(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read the NIv2 task list ({exc.strerror})") from None
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise HarnessError(f"{path}: the NIv2 task list is empty; give one task name per line")
    return names


def _folder_rows(task: Task, folder: Path, per_task: int, listed: list[str] | None) -> list[list[dict[str, Any]]]:
    tasks_dir, test_list = _locate(folder)
    if listed is not None:
        names, origin = listed, f"'data.options.tasks' of {task.path}"
    elif test_list is not None:
        names, origin = _read_list(test_list), str(test_list)
    else:
        names = sorted(p.stem for p in tasks_dir.glob("*.json"))
        origin = f"the task files in {tasks_dir}"
        if names:
            log.warning("NIv2: no %s next to %s; evaluating all %d task files there", TEST_LIST, tasks_dir, len(names))
    if not names:
        raise HarnessError(f"{folder}: no NIv2 task files (tasks/<name>.json) found; {_FOLDER_HINT}")
    present = [n for n in names if (tasks_dir / f"{n}.json").is_file()]
    if not present:
        raise HarnessError(f"{tasks_dir}: none of the {len(names)} NIv2 tasks listed in {origin} has a "
                           f"<name>.json file there (first: {names[0]}); {_FOLDER_HINT}")
    missing = [n for n in names if n not in present]
    if missing:
        log.warning("NIv2: %d of the %d tasks listed in %s are missing from %s and skipped (first: %s)",
                    len(missing), len(names), origin, tasks_dir, missing[0])
    return [read_task(tasks_dir / f"{name}.json", per_task) for name in dict.fromkeys(present)]


def _field(path: Path, raw: Mapping[str, Any], key: str, kind: type, hint: str) -> Any:
    if key not in raw:
        raise HarnessError(f"{path}: missing NIv2 field {key!r}; is this a task file of allenai/natural-instructions?")
    if not isinstance(raw[key], kind):
        raise HarnessError(f"{path}: NIv2 field {key!r} must be {hint}")
    return raw[key]


def _first_text(path: Path, raw: Mapping[str, Any], key: str) -> str:
    """`Definition` and `Categories` are lists in NIv2 (the evaluation uses the first entry)."""
    value = _field(path, raw, key, (list, str), "a list of strings")
    value = value[0] if isinstance(value, list) and value else value
    if not isinstance(value, str) or not value.strip():
        raise HarnessError(f"{path}: NIv2 field {key!r} must hold at least one non-empty string")
    return value


def _examples(path: Path, raw: Mapping[str, Any], key: str) -> list[dict[str, str | None]]:
    examples = []
    for i, example in enumerate(_field(path, raw, key, list, "a list of {input, output, explanation}")):
        if not isinstance(example, dict) or not all(isinstance(example.get(k), str) for k in ("input", "output")):
            raise HarnessError(f"{path}: {key}[{i}] must have string fields 'input' and 'output'")
        explanation = example.get("explanation")
        # None (not "") when absent: the official encoding adds the explanation line only if the key exists.
        examples.append({"input": example["input"], "output": example["output"],
                         "explanation": explanation if isinstance(explanation, str) else None})
    return examples


def read_task(path: Path, per_task: int = DEFAULT_INSTANCES_PER_TASK) -> list[dict[str, Any]]:
    """The first `per_task` instances of one NIv2 task file, each as a row (see the module docstring)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read the NIv2 task file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: an NIv2 task file must hold a JSON object")
    shared = {
        "task_name": path.stem,
        "category": _first_text(path, raw, "Categories"),
        "definition": _first_text(path, raw, "Definition"),
        "positive_examples": _examples(path, raw, "Positive Examples"),
        "negative_examples": _examples(path, raw, "Negative Examples"),
    }
    rows = []
    for i, instance in enumerate(_field(path, raw, "Instances", list, "a list of {id, input, output}")[:per_task]):
        if not isinstance(instance, dict) or not isinstance(instance.get("id"), str) \
                or not isinstance(instance.get("input"), str):
            raise HarnessError(f"{path}: Instances[{i}] must have string fields 'id' and 'input'")
        references = instance.get("output")
        if not (isinstance(references, list) and references and all(isinstance(r, str) for r in references)):
            raise HarnessError(f"{path}: instance {instance['id']} needs 'output' as a non-empty list of strings")
        rows.append({"id": instance["id"], **shared, "input": instance["input"], "references": list(references)})
    if not rows:
        raise HarnessError(f"{path}: the NIv2 task has no instances")
    return rows


def _hub_rows(task: Task, per_task: int, listed: list[str] | None) -> list[list[dict[str, Any]]]:
    """Rows from the hub copy (online only): references regrouped by instance id, no examples or categories."""
    try:
        dataset = quiet_datasets().load_dataset(HUB_ID, split="test")
    except Exception as exc:  # offline, moved or renamed: all end the same way for the user
        raise HarnessError(f"{task.path}: no NIv2 folder given and the hub copy {HUB_ID!r} cannot be loaded "
                           f"({type(exc).__name__}); {_FOLDER_HINT}") from None
    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    for record in dataset:
        instances = by_task.setdefault(record["task_name"], {})
        row = instances.get(record["id"])
        if row is None:
            if len(instances) >= per_task:
                continue
            row = instances[record["id"]] = {
                "id": record["id"], "task_name": record["task_name"], "category": "unknown",
                "definition": record["definition"], "positive_examples": [], "negative_examples": [],
                "input": record["inputs"], "references": [],
            }
        row["references"].append(record["targets"])
    names = [n for n in (listed or list(by_task)) if n in by_task]
    if not names:
        raise HarnessError(f"{task.path}: the hub copy {HUB_ID!r} holds none of the asked-for tasks; {_FOLDER_HINT}")
    log.warning("NIv2 from the hub copy %s: no categories and no positive/negative examples, so templates with "
                "examples render without them; %s for the full benchmark", HUB_ID, _FOLDER_HINT)
    return [list(by_task[n].values()) for n in names]


# -- scoring ------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """NIv2's normalisation: lower case, drop punctuation, collapse whitespace (SQuAD's, articles kept)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    normalized = normalize_answer(prediction)
    return max(float(normalized == normalize_answer(r)) for r in references)


@register_metric("niv2", headline="niv2_rouge_l")
def niv2_metric(prediction: str, references: Sequence[str], row: Mapping[str, Any]) -> dict[str, float | list[float]]:
    """Per-sample NIv2 scores in [0, 1]; run records keep these means, reports show them x100.

    The official scorer sums per-sample maxima over the references and divides by the number of
    samples, then multiplies by 100; the harness averages the same per-sample values, so a report's
    percentage equals the official number. ROUGE-L is NIv2's headline metric, registered as the value
    a task declaring `niv2` first is ranked by. The official per-category choice (exact match for
    the classification categories, ROUGE-L for the rest) is in the task file's metadata. The
    prediction is not stripped or cut: neither metric sees surrounding whitespace.
    """
    return {
        "niv2_rouge_l": rouge_l(prediction, references),
        "niv2_exact_match": exact_match(prediction, references),
    }

