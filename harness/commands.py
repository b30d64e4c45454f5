"""What each CLI subcommand does, kept apart from argument parsing so tests can call it directly."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from harness.adaptive_run import run_budgeted
from harness.chat import PLAIN, ChatFormat
from harness.errors import HarnessError
from harness.eval.budget_plan import Budget
from harness.eval.config import RunConfig
from harness.eval.distributed import Group, detect_launch
from harness.eval.plan import Planner, load_task_splits
from harness.progress import StageProgress, status
from harness.report.terminal import cluster_table, task_list_table
from harness.run_output import print_run, print_tuned_against_base
from harness.tasks.registry import Registry

# Names a user chooses (models, run ids, paths, clusters) reach rich markup only through `escape`
# (or as plain text, markup=False): "[/x]" would raise MarkupError and "[b]" would vanish.


def _builtin_models(console: Console) -> list[str]:
    """The built-in base model and its tuned version, built on first use (a few CPU minutes; over an
    hour on a loaded 2-core machine, hence the progress lines off a terminal too)."""
    from harness.builtin.pretrained import builtin_pair

    with StageProgress(console, training=True) as progress:

        def stage(message: str, steps: int) -> None:
            console.print(f"first use: {message} (cached afterwards)", markup=False, highlight=False)
            progress.begin(message.split(" ")[0], steps)

        return [str(path) for path in builtin_pair(stage=stage, on_progress=progress.training).values()]


def _check_data_options(registry: Registry, data_dirs: list[str], data: list[tuple[str, str]]) -> None:
    """Refuse, before any model loads, a --data-dir that is not a folder and a --data TASK=FOLDER of
    an unknown task or a missing folder: passed over in silence, they ended in a hub error that
    advised the very --data-dir given."""
    for folder in data_dirs:
        if not Path(folder).is_dir():
            what = "is not a folder" if Path(folder).exists() else "no such folder"
            raise HarnessError(f"--data-dir {folder}: {what}; give a folder holding a sub-folder of rows per task")
    for task, folder in data:
        if task not in registry.tasks:
            raise HarnessError(f"--data {task}={folder}: unknown task {task!r} (`harness tasks` lists them)")
        if not Path(folder).is_dir():
            what = "is not a folder" if Path(folder).exists() else "no such folder"
            raise HarnessError(f"--data {task}={folder}: {what}; give the folder holding the task's rows")


def run_command(args: argparse.Namespace, console: Console) -> None:
    """`harness run`; under torchrun or `accelerate launch` every process runs it (`harness.eval.distributed`)
    and rank 0 alone talks: the others log only errors and leave each error's one line to rank 0."""
    launch = detect_launch()
    group = Group(launch) if launch else None
    if group and not group.main:
        console = Console(quiet=True)
        group.silence()
    try:
        _run_models(args, console, group)
    except (HarnessError, KeyboardInterrupt) as exc:
        if group is None or group.main:
            raise
        raise SystemExit(130 if isinstance(exc, KeyboardInterrupt) else 2) from None
    finally:
        if group:
            group.close()


def _run_models(args: argparse.Namespace, console: Console, group: Group | None) -> None:
    from harness.engine.registry import DEFAULT_BACKEND, build_backend, get_backend

    get_backend(args.backend)  # an unknown name fails before any model is built or loaded
    backend_options = {option: getattr(args, option) for option in args.backend_defaults}

    registry = Registry(args.task_dir)
    _check_data_options(registry, args.data_dir, args.data)
    config = RunConfig(
        tasks=args.tasks, shots=args.shots, templates=args.templates, limit=args.limit, seed=args.seed,
        chat=args.chat, fewshot_multiturn=not args.fewshot_single_turn,
        data_dirs=tuple(str(Path(d).resolve()) for d in args.data_dir),
        data_folders=tuple((task, str(Path(folder).resolve())) for task, folder in args.data),
    )
    registry.select(config.tasks)  # fail on an unknown task before loading any model
    if args.budget is None and args.budget_design != "balanced":
        raise HarnessError(f"--budget-design {args.budget_design} shapes a budget; give --budget too (0.1, say)")
    budget = Budget.parse(args.budget, args.budget_design) if args.budget is not None else None
    if not args.model and args.backend != DEFAULT_BACKEND:
        raise HarnessError(f"--backend {args.backend}: give --model (the built-in models are for the "
                           f"{DEFAULT_BACKEND} backend)")
    models = args.model or (group.broadcast(lambda: _builtin_models(console)) if group else _builtin_models(console))
    if args.run_id and len(models) > 1:
        raise HarnessError("--run-id names one run directory; give one --model with it")
    if args.seen is not None:
        from harness.seen import declare_seen, refuse_seen_with_manifest

        declare_seen(registry, args.seen)  # an unknown name or a tuned checkpoint fails before any model loads
        for model in models:
            refuse_seen_with_manifest(model if Path(model).is_dir() else None)
    records, directories = [], []
    for model in models:
        with status(console, f"loading {model}"):
            load = partial(build_backend, args.backend, model, backend_options, args.backend_defaults)
            backend = group.agree(load) if group else load()
        with StageProgress(console, training=False) as progress:
            name = Path(model).name or model
            progress.begin(name, unit="samples", line_name=f"evaluating {name}")
            directory, record = run_budgeted(config, backend, registry, args.out, run_id=args.run_id,
                                             overwrite=args.overwrite, progress=progress.evaluation,
                                             seen=args.seen, reuse_complete=True, group=group, budget=budget)
        print_run(directory, record, config.seed, console, args.estimator)
        records.append(record)
        directories.append(directory)
    console.print(cluster_table(records))
    print_tuned_against_base(directories, config.seed, console)


def compare_command(args: argparse.Namespace, console: Console) -> None:
    """`harness compare RUN_A RUN_B [RUN_C ...]`: every later run against the first, paired by sample."""
    from harness.analysis.compare import compare_runs, run_label
    from harness.eval.store import load_run
    from harness.files import write_json_atomic
    from harness.report.terminal import comparison_table, comparison_task_table

    if len(args.runs) < 2:
        raise HarnessError("harness compare needs at least two run folders: RUN_A RUN_B [RUN_C ...]")
    runs = [load_run(directory) for directory in args.runs]
    names = [directory.name for directory in args.runs]
    if len(set(names)) < len(names):  # same folder name under different parents: keep the paths apart
        names = [str(directory) for directory in args.runs]
    labels = [run_label(record, name) for (record, _), name in zip(runs, names, strict=True)]
    comparisons = [
        compare_runs(runs[0], other, seed=args.seed, resamples=args.resamples, confidence=args.confidence,
                     labels=(labels[0], label))
        for other, label in zip(runs[1:], labels[1:], strict=True)
    ]
    for comparison in comparisons:
        console.print(comparison_table(comparison))
        console.print(comparison_task_table(comparison))
        console.print(f"{comparison['shared_samples']} shared samples; only in A: {comparison['only_a']}, "
                      f"only in B: {comparison['only_b']}", highlight=False)
    for (record, _), label in zip(runs, labels, strict=True):
        if record.budget is not None:
            console.print(f"{label} is budgeted (--budget {record.budget.requested}): compared on the cells both runs "
                          "computed, with computed values only; its estimates are in `harness report`",
                          markup=False, highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, {"runs": [str(d) for d in args.runs], "comparisons": comparisons})
        console.print(f"comparison: [bold]{escape(str(args.json))}[/]", highlight=False)


def report_command(args: argparse.Namespace, console: Console) -> None:
    """`harness report RUN [RUN ...] --out DIR`: report.html (plots, tables) and report.md, key tables printed."""
    from harness.report.grids import CONFIDENCE
    from harness.report.html import build_report, write_html, write_markdown
    from harness.report.inputs import load_runs, load_sweep
    from harness.report.terminal import comparison_table, gap_table, seen_cluster_table, sweep_table, text_table

    if args.out.exists() and not args.out.is_dir():
        raise HarnessError(f"--out {args.out}: is a file; give a folder for report.html and report.md")
    runs = load_runs(args.runs)
    sweep = load_sweep(args.sweep) if args.sweep else None
    with status(console, "computing intervals and drawing plots"):
        report = build_report(runs, sweep, seed=args.seed, title=args.title, estimator=args.estimator)
    grids = {grid.id: grid for grid in report.tables}
    console.print(text_table("runs", grids["table-runs"].columns, grids["table-runs"].rows, grids["table-runs"].right))
    for label, rows in report.data["cluster_scores"].items():
        console.print(f"[bold]{escape(label)}[/]", highlight=False)
        console.print(seen_cluster_table(rows, confidence=CONFIDENCE))
    for comparison in report.data["comparisons"]:
        console.print(comparison_table(comparison))
    for label, rows in report.data["generalization_gap"].items():
        gap = [row for row in rows if row["gap"] is not None]
        if gap:
            console.print(f"[bold]{escape(label)}[/]", highlight=False)
            console.print(gap_table(gap))
    if report.data["sweep"] is not None:
        console.print(sweep_table(report.data["sweep"]))
    for what, why in report.omitted:
        console.print(f"[dim]left out[/] {escape(what)}: {escape(why)}", highlight=False)
    html_path = write_html(report, args.out / "report.html")
    markdown_path = write_markdown(report, args.out / "report.md")
    console.print(f"report: [bold]{escape(str(html_path))}[/]  summary: {escape(str(markdown_path))}", highlight=False)


def tasks_command(args: argparse.Namespace, console: Console) -> None:
    registry = Registry(args.task_dir)
    if args.tasks_command != "show":
        console.print(task_list_table(registry.clusters()))
        return
    task = registry.get(args.name)
    _check_data_options(registry, args.data_dir, args.data)
    formats = [PLAIN]
    if args.chat_model:  # only the tokenizer is loaded: rendering needs its chat template, not the weights
        formats.append(ChatFormat.from_pretrained(args.chat_model))
    data = {"data_dirs": tuple(args.data_dir), "data_folders": tuple(args.data)}
    for chat_format in formats:
        for shots in (0, args.shots):
            _show_prompts(task, shots, args.row, args.seed, chat_format, console, data)


def _show_prompts(task, shots: int, row: int, seed: int, chat_format: ChatFormat, console: Console,
                  data: dict) -> None:
    chat = chat_format is not PLAIN
    # Only the rows up to the one shown are planned; a negative row loads the whole split to say how
    # many rows there are.
    config = RunConfig(tasks=task.name, shots=(shots,), limit=row + 1 if row >= 0 else None, seed=seed,
                       chat="on" if chat else "off", **data)
    planner = Planner(config, chat_format)
    evaluation, pool = load_task_splits(task, config)
    if not 0 <= row < len(evaluation.ids):  # cut at row + 1, the split is shorter only when it has no such row
        rows = len(evaluation.ids)
        raise HarnessError(f"--row {row}: split {evaluation.name!r} of task {task.name!r} has {rows} rows "
                           f"(valid rows 0..{rows - 1})")
    samples = [s for s in planner.plan_task(task, evaluation, pool) if s.row_id == evaluation.ids[row]]
    layout = "chat" if chat else "plain"
    for sample in samples:
        answer = (
            f"options: {list(sample.row.options)}  answer: {sample.row.answer_text!r}"
            if sample.row.options else f"references: {list(sample.row.references or ())}"
        )
        title = escape(f"{task.name} / {sample.template.id} [{sample.template.hash}]  {shots}-shot, {layout}")
        console.print(Panel(escape(sample.prompt), title=title, subtitle=escape(answer), title_align="left",
                            subtitle_align="left", highlight=False))


def templates_command(args: argparse.Namespace, console: Console) -> None:
    """`harness templates import-promptsource`: the task's kind decides whether choices become options;
    `harness templates vary`: see harness/variant_command.py."""
    if args.templates_command == "vary":
        from harness.variant_command import vary_command

        vary_command(args, console)
        return
    from harness.tasks.promptsource import import_promptsource

    registry = Registry(args.task_dir)
    kind = args.kind
    if args.task in registry.tasks:
        task = registry.tasks[args.task]
        if kind and kind != task.kind:
            raise HarnessError(f"--kind {kind}: task {args.task!r} in {task.path} is a {task.kind} task")
        kind = task.kind
    elif kind is None:
        raise HarnessError(f"task {args.task!r} has no task file yet; pass --kind choice or --kind generate")
    out = args.out or Path("templates") / args.task
    report = import_promptsource(args.path, out, kind, overwrite=args.overwrite,
                                 truncate_fields=args.truncate_fields)
    for promptsource_id, name, reason in report.skipped:
        console.print(f"[yellow]not converted[/] {escape(name)!r} ({promptsource_id}): {escape(reason)}",
                      highlight=False)
    for file_name, note in report.notes:
        console.print(f"[dim]note[/] {escape(file_name)}: {escape(note)}", highlight=False)
    console.print(f"converted {len(report.written)} of {report.total} templates ({escape(kind)} task "
                  f"{escape(repr(args.task))}) into [bold]{escape(str(out))}[/]", highlight=False)


def _tune_configs(args: argparse.Namespace, registry: Registry):
    """(held-out clusters, mixture config, train config) from `harness tune`'s flags, checked before
    any model loads."""
    from harness.tune.mixture import MixtureConfig, expand_held_out
    from harness.tune.trainer import TrainConfig

    held_out = tuple(c.strip() for c in args.held_out.split(",") if c.strip())
    if not held_out:
        raise HarnessError("--held-out needs at least one cluster name (see `harness tasks`)")
    expand_held_out(registry, held_out)  # an unknown cluster fails before any model loads
    _check_data_options(registry, args.data_dir, args.data)
    mixture_config = MixtureConfig(
        held_out_clusters=held_out, tasks=args.tasks, examples_per_task_cap=args.cap, total_examples=args.total,
        fewshot_fraction=args.fewshot_fraction, max_shots=args.max_shots, seed=args.seed,
        held_out_templates=args.held_out_templates,
        data_dirs=tuple(str(Path(d).resolve()) for d in args.data_dir),
        data_folders=tuple((task, str(Path(folder).resolve())) for task, folder in args.data),
    )
    train_config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, max_length=args.max_length, packing=args.packing, seed=args.seed,
        bf16=args.bf16, lora={"r": args.lora_r} if args.lora_r else None, lora_save="merged",
        save_every=max(args.save_every, 0), log_every=1,
    )
    train_config.validate()
    return held_out, mixture_config, train_config


def training_processes():
    """The process group of a data-parallel launch (a single process otherwise), set up before the
    output folder is read so that every process sees it as it was before training."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def tune_command(args: argparse.Namespace, console: Console) -> None:
    """`harness tune`: mixture table, training with a progress bar, checkpoint + training_manifest.json."""
    from harness.tune.mixture import mixture_table
    from harness.tune.run import prepare_mixture, prepare_output, train_and_record

    registry = Registry(args.task_dir)
    if args.sweep:
        sweep_command(args, registry, console)
        return
    _, mixture_config, train_config = _tune_configs(args, registry)
    processes = training_processes()
    if not processes.is_main_process:  # under torchrun / accelerate launch, one process talks
        console = Console(quiet=True)
    state = prepare_output(args.out, args.base, args.resume)
    processes.wait_for_everyone()  # every process has read --out before any of them writes to it
    with status(console, "building the training mixture"):
        mixture = prepare_mixture(registry, args.base, mixture_config, args.chat)
    console.print(mixture_table(mixture))
    if state.resume_from is not None:
        console.print(f"resuming from [bold]{escape(str(state.resume_from))}[/]", highlight=False)
    with StageProgress(console, training=True) as progress:
        progress.begin("training", args.steps)
        result = train_and_record(mixture, args.base, train_config, args.out, state, on_progress=progress.training)
    if result.summary is None:
        console.print(f"[bold]{escape(str(args.out))}[/] already holds this finished tuning; nothing to do",
                      highlight=False)
    else:
        s = result.summary
        console.print(f"trained {s.steps} steps: final loss {s.final_loss:.4f}, {s.tokens_seen} tokens, "
                      f"{s.tokens_per_s:.0f} tokens/s", highlight=False)
    console.print(f"checkpoint: [bold]{escape(str(args.out))}[/]  manifest: {escape(str(result.manifest_path))} "
                  f"(mixture {result.manifest.mixture_hash[:12]})", highlight=False)


def sweep_command(args: argparse.Namespace, registry: Registry, console: Console) -> None:
    """`harness tune --sweep clusters`: tune on 1..k clusters, evaluate each on the held-out ones."""
    from harness.engine.registry import DEFAULT_BACKEND, get_backend
    from harness.report.terminal import sweep_table
    from harness.tune.sweep import SWEEP_FILE, SweepCallbacks, plan_sweep, run_sweep

    held_out, mixture_config, train_config = _tune_configs(args, registry)
    if args.resume:
        raise HarnessError("--sweep resumes by itself (rerun the same command); drop --resume")
    order = tuple(c.strip() for c in args.sweep_order.split(",") if c.strip()) if args.sweep_order else None
    plan = plan_sweep(registry, held_out, args.tasks, order, args.seed)
    eval_config = RunConfig(tasks=",".join(plan.held_out), shots=args.eval_shots, limit=args.eval_limit,
                            chat=args.chat, data_dirs=mixture_config.data_dirs,
                            data_folders=mixture_config.data_folders)
    console.print(f"sweep: held out {', '.join(plan.held_out)}; clusters added in the order "
                  f"{', '.join(plan.order)}", markup=False, highlight=False)
    with StageProgress(console, training=True) as progress:

        def stage(message: str) -> None:
            console.print(message, markup=False, highlight=False)
            progress.begin(message.split(":")[0], visible=False)

        sweep = run_sweep(registry, args.base, plan, mixture_config, train_config, eval_config, args.out, args.chat,
                          get_backend(DEFAULT_BACKEND),
                          SweepCallbacks(stage, progress.training, progress.evaluation))
    console.print(sweep_table(sweep))
    base_run = escape(str(args.out / "runs" / "clusters-00"))
    console.print(f"sweep written to [bold]{escape(str(args.out / SWEEP_FILE))}[/]; draw it with "
                  f"`harness report {base_run} ... --sweep {escape(str(args.out))}`", highlight=False)
