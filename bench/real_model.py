"""A real instruction-tuned checkpoint, scored by the harness and by lm-eval's own task definitions.

Two jobs, each writing a markdown document with the command that made it:

- `heldout`: SmolLM2-135M-Instruct (or any model) on the SuperGLUE rows of ../shared (RTE, CB,
  COPA): every template of each task, zero-shot, with the chat template (the way the model was
  tuned) and/or without, and the spread over templates.
- `copa`: lm-eval's own `copa` task on the same rows and weights beside the harness's
  `lm_eval_copa` template (lm-eval's prompt and choices, written as a template), which must give
  the same accuracy.

IFEval side by side is `bench/ifeval_541.py` (it takes several sittings on a CPU).

lm-eval reads the hub; offline, its task YAMLs are included from its installed package with the
dataset pointed at the local files (`_local_task`), so its prompts, choices and scoring code are its
own. Usage:

    .venv/bin/python -m bench.real_model heldout --model DIR --out bench/real_model_heldout.md
    .venv/bin/python -m bench.real_model copa --model DIR --out bench/real_model_copa.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared" / "data"


def _lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _local_task(directory: Path, name: str, include: Path, data_files: dict[str, str]) -> None:
    """An lm-eval task YAML that includes lm-eval's own file and reads `data_files` as JSON lines."""
    lines = [f"include: {include}", f"task: {name}", "tag: []", "dataset_path: json", "dataset_name: null",
             "dataset_kwargs:", "  data_files:"]
    lines += [f"    {split}: {path}" for split, path in data_files.items()]
    (directory / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def _lm_eval(model: Path, tasks: list[str], directory: Path, chat: bool,
             batch_size: int = 16, log_samples: bool = False) -> dict[str, Any]:
    """lm-eval's `simple_evaluate` on `model` (its whole result: `results`, and `samples` with
    `log_samples`), its responses cached in `directory`: lm-eval commits each generation as it
    finishes, so a killed run started again with the same --work resumes."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness.benchmarks.ifeval import use_bundled_nltk_data

    use_bundled_nltk_data()  # lm-eval's IFEval checkers would otherwise download punkt_tab

    return simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", tasks=tasks,
                           task_manager=TaskManager(include_path=str(directory), include_defaults=False),
                           apply_chat_template=chat, batch_size=batch_size, device="cpu",
                           use_cache=str(directory / "responses"), log_samples=log_samples)


def _harness(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """`harness run ARGS` in a subprocess (with `env` added to this process's environment); its run record."""
    command = [sys.executable, "-m", "harness", "run", *args]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"harness run failed: {done.stderr.strip().splitlines()[-1:]}")
    record = next(Path(args[args.index("--out") + 1]).glob("*/run.json"))
    return json.loads(record.read_text())


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def heldout(model: Path, work: Path, chats: tuple[str, ...]) -> str:
    data = SHARED / "superglue"
    lines = ["| task | template | " + " | ".join(f"chat {c}" for c in chats) + " |",
             "|---|---|" + "---:|" * len(chats)]
    spread: dict[tuple[str, str], list[float]] = {}
    scores: dict[str, dict[tuple[str, str], float]] = {}
    seconds = {}
    for chat in chats:
        started = time.perf_counter()
        record = _harness(["--model", str(model), "--tasks", "rte,cb,copa", "--data-dir", str(data), "--chat", chat,
                           "--out", str(work / f"harness-chat-{chat}")])
        seconds[chat] = time.perf_counter() - started
        scores[chat] = {(s["task"], s["template"]): s["metrics"]["acc"]["mean"] for s in record["scores"]
                        if s.get("group") is None}
        for (task, _), value in scores[chat].items():
            spread.setdefault((task, chat), []).append(value)
    for key in sorted(scores[chats[0]]):
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(_pct(scores[c][key]) for c in chats) + " |")
    lines += ["", "| task | chat | templates | mean | min | max | spread (max - min) | stdev |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (task, chat), values in sorted(spread.items()):
        lines.append(f"| {task} | {chat} | {len(values)} | {_pct(statistics.mean(values))} | {_pct(min(values))} | "
                     f"{_pct(max(values))} | {_pct(max(values) - min(values))} | {_pct(statistics.stdev(values))} |")
    cells = sum(len(v) for k, v in spread.items() if k[1] == chats[0])
    lines += ["", "harness wall time (0 where --work already held the finished run): "
              + ", ".join(f"chat {c} {seconds[c]:.0f} s" for c in chats) + f" ({cells} (task, template) cells each)."]
    return "\n".join(lines)


def copa(model: Path, work: Path) -> str:
    """The harness's `lm_eval_copa` template against lm-eval's own `copa` task, same rows and weights."""
    copa_rows = SHARED / "superglue" / "copa"
    record = _harness(["--model", str(model), "--tasks", "copa", "--templates", "lm_eval_copa", "--chat", "off",
                       "--data-dir", str(copa_rows.parent), "--out", str(work / "harness-copa")])
    (ours,) = [s for s in record["scores"] if s.get("group") is None]
    tasks_dir = work / "lm-eval-tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    _local_task(tasks_dir, "copa_local", _lm_eval_tasks_dir() / "super_glue" / "copa" / "default.yaml",
                {"train": str(copa_rows / "train.jsonl"), "validation": str(copa_rows / "val.jsonl")})
    reference = _lm_eval(model, ["copa_local"], tasks_dir, chat=False)["results"]["copa_local"]
    accuracy = _pct(ours["metrics"]["acc"]["mean"])
    harness_row = f"| harness, template `lm_eval_copa` (hash {ours['template_hash']}) | {accuracy} |"
    return "\n".join(["| COPA validation (100 rows), zero-shot, no chat template | accuracy |", "|---|---:|",
                      f"| lm-eval 0.4.13 `copa` task | {_pct(reference['acc,none'])} |", harness_row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=("heldout", "copa"))
    parser.add_argument("--model", type=Path, required=True, help="a transformers model folder")
    parser.add_argument("--chat", choices=("off", "on", "both"), default="both",
                        help="heldout: with the chat template, without, or both (default)")
    parser.add_argument("--work", type=Path, help="keep the runs here (a finished run is reused; default: a "
                                                    "temporary folder)")
    parser.add_argument("--out", type=Path, required=True, help="the markdown document to write")
    args = parser.parse_args()
    chats = ("off", "on") if args.chat == "both" else (args.chat,)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        jobs = {"heldout": lambda: heldout(args.model, work, chats), "copa": lambda: copa(args.model, work)}
        body = jobs[args.job]()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", "bench.real_model", *sys.argv[1:]])
    args.out.write_text(f"```bash\n{command}\n```\n\n{body}\n")


if __name__ == "__main__":
    main()
