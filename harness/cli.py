"""The `harness` command: parse arguments, call the library, print through rich.

Bad input ends with one red line and exit status 2 (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from harness.analysis.estimators import ESTIMATORS
from harness.errors import HarnessError

# Piped output (CI logs, files) gets wide tables rather than rich's 80-column default, so task and
# cluster names are never cut.
console = Console() if sys.stdout.isatty() else Console(width=160)
error_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)
log = logging.getLogger("harness")


def _shots(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,5, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_ESTIMATOR_FLAG = {
    "choices": ESTIMATORS, "default": "plug-in",
    "help": "how a budgeted run's uncomputed cells are estimated: plug-in (the default: a penalized logistic fit "
            "and a row bootstrap), bayes (posterior draws of the same model) or choices (posterior draws of a "
            "model of the option each cell chose, for choice tasks; its intervals held the full-run quantiles "
            "at least 90%% of the time on every benchmark run; see bench/RESULTS.md)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Instruction-following evaluation harness.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="evaluate a model on tasks x templates x shots")
    run.add_argument("--model", action="append", help="local folder or hub id (repeatable); "
                     "default: the built-in tiny models")
    run.add_argument("--tasks", default="builtin",
                     help="task and/or cluster names, comma-separated; 'builtin' (default): the offline "
                          "procedural suite; 'all': every task (hub tasks need a network or --data)")
    run.add_argument("--shots", type=_shots, default=(0,), help="shot counts, e.g. 0,5 (default 0)")
    run.add_argument("--templates", default="all", help="'all' or template ids, comma-separated")
    run.add_argument("--seen", metavar="TASKS",
                     help="task and/or cluster names the model was tuned on, for a model without a "
                          "training_manifest.json: scores are labelled seen, held out task (another task of the "
                          "cluster is seen) or held out cluster")
    run.add_argument("--limit", type=_positive_int,
                     help="evaluate only the first N rows of each task; of each member task for a task family "
                          "(niv2: N instances of each of its tasks, as the paper's first 100)")
    run.add_argument("--seed", type=int, default=1234, help="few-shot, bootstrap and --budget design seed")
    run.add_argument("--budget", metavar="FRACTION|CELLS",
                     help="compute only part of each task's (template, row) cells: a fraction (0.1 or 10%%) or a "
                          "number of cells per task and shot count, chosen by a seeded design balanced over templates "
                          "and rows; the rest is estimated (each template's score, quantiles over templates). The "
                          "same command with a larger budget, or none, computes only the missing cells")
    run.add_argument("--budget-design", choices=("balanced", "adaptive"), default="balanced",
                     help="which cells a --budget computes: balanced (the seeded design, every template alike; the "
                          "default) or adaptive (a balanced half, then the rest to the templates ranked near the "
                          "quantiles over templates, chosen from the first half's results)")
    run.add_argument("--estimator", **_ESTIMATOR_FLAG)
    run.add_argument("--out", type=Path, default=Path("results"), help="parent folder of run directories")
    run.add_argument("--run-id", help="run directory name (default: model name + a hash of the run spec)")
    run.add_argument("--overwrite", action="store_true", help="replace a complete run with the same id")
    run.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                     help="apply the tokenizer's chat template (auto: when the model has one)")
    run.add_argument("--fewshot-single-turn", action="store_true",
                     help="under a chat template, put exemplars in one user turn instead of one turn each")
    run.add_argument("--backend", default="hf",
                     help="what runs the model: hf (transformers, the default), openai-completions or openai-chat "
                          "(an OpenAI-compatible server: vLLM, SGLang, TGI, llama-cpp-python; see --base-url), "
                          "scripted (a dry run that loads no model: empty generations, the shortest option chosen), "
                          "or one a plugin registers")
    # Backend flags: each backend takes those it declares (engine/registry.py) and refuses the rest.
    engine = run.add_argument_group("backend options")
    engine.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    engine.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    engine.add_argument("--batch-tokens", type=_positive_int, default=4096, help="padded tokens per batch")
    engine.add_argument("--static-cache", action="store_true",
                     help="generate with transformers' static KV cache, compiled by torch.compile on CUDA (pays off "
                          "for long generations)")
    engine.add_argument("--batch-invariant", action="store_true",
                        help="run each request in forward passes of its own, so no number depends on the batch it "
                             "shared: a budgeted run extended to full equals a full run bit for bit (slower; without "
                             "it, to float32 rounding)")
    engine.add_argument("--on-overflow", choices=("truncate", "error"), default="truncate",
                     help="a prompt longer than the model's context: cut it from the left as lm-eval does, warn and "
                          "count it in the record (truncate, the default), or refuse the run (error)")
    engine.add_argument("--gguf-file", metavar="NAME",
                        help="the GGUF file inside the --model folder (or give --model FILE.gguf): converted once "
                             "to a transformers folder in the harness cache, keyed by the file's sha256")
    engine.add_argument("--revision", metavar="REV", help="branch, tag or commit of a hub model (recorded)")
    engine.add_argument("--trust-remote-code", action="store_true",
                        help="run the model's own code from the hub (transformers' trust_remote_code; off by default)")
    engine.add_argument("--device-map", metavar="MAP",
                        help="place the model over devices with accelerate: auto, balanced, balanced_low_0, "
                             "sequential, or a JSON file mapping module names to devices (instead of --device)")
    engine.add_argument("--max-memory", metavar="LIMITS",
                        help="per-device limits for --device-map, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    engine.add_argument("--base-url", metavar="URL",
                        help="openai-completions/openai-chat: the OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    engine.add_argument("--model-name", metavar="NAME",
                        help="openai-*: the model name sent to the server (default: the --model value, which names "
                             "the run)")
    engine.add_argument("--concurrency", type=_positive_int, default=8, help="openai-*: requests in flight (default 8)")
    engine.add_argument("--api-key-env", metavar="VAR",
                        help="openai-*: the environment variable holding the server's API key (never recorded)")
    engine.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="openai-*: seconds to wait for one answer before retrying it (default 600)")
    engine.add_argument("--max-retries", type=int, default=6,
                        help="openai-*: retries of a request on 429, 5xx, a timeout or a dropped connection, with "
                             "exponential backoff (default 6)")
    run.set_defaults(backend_defaults={action.dest: action.default for action in engine._group_actions})
    run.add_argument("--task-dir", type=Path, action="append", default=[], help="extra folder of task files")
    _add_data_options(run)

    tasks = commands.add_parser("tasks", help="list tasks by cluster, or show one task's prompts")
    # Given before `show` or after it: the values of both places are joined (see tasks_command).
    tasks.add_argument("--task-dir", dest="outer_task_dir", type=Path, action="append", default=[],
                       help="extra folder of task files")
    _add_data_options(tasks, dest_prefix="outer_")
    task_commands = tasks.add_subparsers(dest="tasks_command")
    show = task_commands.add_parser("show", help="render every template of a task on a real row")
    show.add_argument("name")
    show.add_argument("--shots", type=int, default=2, help="k for the k-shot rendering (default 2)")
    show.add_argument("--row", type=int, default=0, help="which evaluation row to render")
    show.add_argument("--seed", type=int, default=1234)
    show.add_argument("--chat-model", help="also render through this model's chat template")
    show.add_argument("--task-dir", type=Path, action="append", default=[], help="extra folder of task files")
    _add_data_options(show)

    tune = commands.add_parser("tune", help="instruction-tune a model on a FLAN-style mixture of the tasks")
    tune.add_argument("--base", required=True, help="base model: local folder or hub id")
    tune.add_argument("--held-out", required=True, metavar="CLUSTER[,...]",
                      help="clusters kept out of training (with their related clusters)")
    tune.add_argument("--steps", type=_positive_int, required=True, help="optimizer steps")
    tune.add_argument("--out", type=Path, required=True, help="folder for the tuned checkpoint")
    tune.add_argument("--tasks", default="builtin", help="tasks and/or clusters to train on (default: builtin)")
    tune.add_argument("--cap", type=_positive_int, default=3000, help="examples per task at most (default 3000)")
    tune.add_argument("--total", type=_positive_int, help="scale the mixture to N examples in all")
    tune.add_argument("--held-out-templates", type=int, default=0, metavar="N",
                      help="keep N templates of every trained task out of training (seeded), to measure seen "
                           "tasks under unseen wordings (default 0)")
    tune.add_argument("--fewshot-fraction", type=float, default=0.5, help="share of few-shot examples (default 0.5)")
    tune.add_argument("--max-shots", type=int, default=3, help="most exemplars in a few-shot example (default 3)")
    tune.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                      help="render examples through the base tokenizer's chat template (auto: when it has one)")
    tune.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    tune.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps (default 0)")
    tune.add_argument("--batch-size", type=_positive_int, default=8, help="examples per micro-batch (default 8)")
    tune.add_argument("--grad-accum", type=_positive_int, default=1, help="micro-batches per step (default 1)")
    tune.add_argument("--max-length", type=_positive_int, default=1024, help="tokens per example and packed row")
    tune.add_argument("--packing", choices=("packed", "padded"), default="packed")
    tune.add_argument("--lora-r", type=_positive_int, help="train a LoRA of this rank (merged into the saved "
                      "weights) instead of every weight")
    tune.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    tune.add_argument("--seed", type=int, default=0, help="mixture and training seed (default 0)")
    tune.add_argument("--save-every", type=int, default=100,
                      help="steps between resumable checkpoints in --out (default 100; 0: none)")
    tune.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    tune.add_argument("--task-dir", type=Path, action="append", default=[], help="extra folder of task files")
    tune.add_argument("--sweep", choices=("clusters",),
                      help="FLAN's ablation: tune on 1, 2, ... k of the other clusters, evaluate the base model "
                           "and each checkpoint on the held-out clusters, and write --out/sweep.json")
    tune.add_argument("--sweep-order", metavar="CLUSTER[,...]",
                      help="the order in which --sweep adds clusters (default: a seeded shuffle of all of them)")
    tune.add_argument("--eval-limit", type=_positive_int, help="--sweep: rows per held-out task (default: all)")
    tune.add_argument("--eval-shots", type=_shots, default=(0,), help="--sweep: shot counts to evaluate "
                      "(default 0)")
    _add_data_options(tune)

    compare = commands.add_parser("compare", help="compare runs sample by sample, each later run against the first")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (RUN_A RUN_B [RUN_C ...])")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    compare.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    compare.add_argument("--json", type=Path, metavar="PATH", help="also write the comparison as JSON")

    report = commands.add_parser("report", help="one self-contained HTML page of plots and tables (and a Markdown "
                                 "summary) for runs, each later run against the first")
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders; the first is the baseline")
    report.add_argument("--out", type=Path, required=True, help="folder for report.html and report.md")
    report.add_argument("--sweep", type=Path, metavar="PATH",
                        help="a cluster sweep folder (or its sweep.json) to draw held-out score against clusters")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.add_argument("--title", help="the page title (default: Evaluation report)")
    report.add_argument("--estimator", **_ESTIMATOR_FLAG)

    templates = commands.add_parser("templates", help="import template files from other formats, or generate "
                                    "format variants of a task's templates")
    template_commands = templates.add_subparsers(dest="templates_command", required=True)
    promptsource = template_commands.add_parser(
        "import-promptsource", help="convert a promptsource templates.yaml into template files")
    promptsource.add_argument("path", type=Path, help="a promptsource templates.yaml")
    promptsource.add_argument("--task", required=True, help="the task the templates are for")
    promptsource.add_argument("--out", type=Path, help="folder to write (default: templates/TASK)")
    promptsource.add_argument("--kind", choices=("choice", "generate"),
                              help="the task's kind, needed when the task has no task file yet")
    promptsource.add_argument("--task-dir", type=Path, action="append", default=[], help="extra folder of task files")
    promptsource.add_argument("--overwrite", action="store_true", help="replace template files of the same name")
    promptsource.add_argument("--truncate-fields", type=_positive_int, metavar="N",
                              help="cut every {{ ... }} output to N characters, as promptsource's apply() does "
                                   "with 2048 (default: no cut)")
    vary = template_commands.add_parser(
        "vary", help="write format variants of a task's templates (separators, casing, enumerators, answer cue)")
    vary.add_argument("task", help="the task whose templates are varied")
    vary.add_argument("--n", type=int, default=50, help="variants in all, spread over the templates (default 50)")
    vary.add_argument("--seed", type=int, default=0, help="the draw's seed: the same seed writes the same files "
                      "(default 0)")
    vary.add_argument("--out", type=Path, help="folder for tasks/TASK.yaml and templates/FOLDER/*.yaml, to pass "
                      "to `harness run --task-dir OUT/tasks` (default: ./templates-vary)")
    vary.add_argument("--task-dir", type=Path, action="append", default=[], help="extra folder of task files")
    vary.add_argument("--overwrite", action="store_true", help="replace the variants an earlier run wrote there")
    vary.add_argument("--with-sources", action="store_true",
                      help="also copy the task's own templates into the folder, so a run covers the hand-written "
                           "formats and the variants together")
    return parser


def _task_folder(text: str) -> tuple[str, str]:
    task, separator, folder = text.partition("=")
    if not separator or not task or not folder:
        raise argparse.ArgumentTypeError(f"expected TASK=FOLDER, got {text!r}")
    return task, folder


def _add_data_options(parser: argparse.ArgumentParser, dest_prefix: str = "") -> None:
    parser.add_argument("--data-dir", dest=f"{dest_prefix}data_dir", action="append", default=[],
                        help="folder with a sub-folder of local rows per task (named after the task or its "
                             "hub subset); used instead of the hub")
    parser.add_argument("--data", dest=f"{dest_prefix}data", type=_task_folder, action="append", default=[],
                        metavar="TASK=FOLDER", help="one task's local rows (a file per split, or a single file)")


def _join_outer_options(args: argparse.Namespace) -> None:
    """`harness tasks --data-dir D show T` and `harness tasks show T --data-dir D` mean the same."""
    for name in ("task_dir", "data_dir", "data"):
        outer = getattr(args, f"outer_{name}", None)
        if outer is not None:
            setattr(args, name, outer + getattr(args, name, []))


def _configure_logging(verbose: bool) -> None:
    handler = RichHandler(console=error_console, show_time=False, show_path=False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], format="%(message)s")
    # Their failures reach the user as the harness's own one-line error (which names the file), so
    # their log lines would only be a second, less useful line.
    for noisy in ("transformers", "datasets", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # The CLI draws its own progress; the libraries' tqdm bars would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's kill, `timeout`) ends a command the way Ctrl-C does: finished work is
    already on disk, and the user is told how to resume."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _error(exc: BaseException) -> Text:
    """The one error line, built as Text so brackets in the message are never read as rich markup."""
    return Text.assemble(("error:", "bold red"), " ", str(exc))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _join_outer_options(args)
    _configure_logging(args.verbose)
    _interrupt_on_sigterm()
    # The tokenizers library warns and disables threads after a fork unless told up front.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # Imported on use: the commands module pulls in torch and transformers, which `--help` never needs.
        from harness import commands

        getattr(commands, f"{args.command}_command")(args, console)
        return 0
    except HarnessError as exc:
        if args.debug:
            raise
        error_console.print(_error(exc), highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        saved = ("checkpoints are saved every --save-every steps; rerun with --resume to continue"
                 if args.command == "tune" else "finished samples are saved; rerun the same command to resume")
        error_console.print(f"[yellow]interrupted[/]: {saved}")
        return 130


if __name__ == "__main__":
    sys.exit(main())
