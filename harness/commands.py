"""What each CLI subcommand does, kept apart from argument parsing so tests can call it directly."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.analysis import template_sensitivity
from harness.errors import HarnessError
from harness.registry import Registry
from harness.report import cluster_table, group_table, score_table, sensitivity_table, task_list_table
from harness.runner import NoChatTemplate, Planner, RunConfig, load_task_splits, run


def _builtin_models(console: Console) -> list[str]:
    from harness.builtin.tiny_models import builtin_models

    with console.status("building the built-in tiny models (cached after the first time)"):
        return [str(path) for path in builtin_models().values()]


def run_command(args: argparse.Namespace, console: Console) -> None:
    from harness.engine import HFBackend

    registry = Registry(args.task_dir)
    config = RunConfig(
        tasks=args.tasks, shots=args.shots, templates=args.templates, limit=args.limit, seed=args.seed,
        chat=args.chat, fewshot_multiturn=not args.fewshot_single_turn,
        data_dirs=tuple(str(Path(d).resolve()) for d in args.data_dir),
        data_folders=tuple((task, str(Path(folder).resolve())) for task, folder in args.data),
    )
    registry.select(config.tasks)  # fail on an unknown task before loading any model
    models = args.model or _builtin_models(console)
    if args.run_id and len(models) > 1:
        raise HarnessError("--run-id names one run directory; give one --model with it")
    records = []
    for model in models:
        with console.status(f"loading {model}"):
            backend = HFBackend(model, dtype=args.dtype, device=args.device, batch_tokens=args.batch_tokens)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task(Path(model).name or model, total=None)

            def advance(phase: str, finished: int, total: int, bar=bar, progress=progress) -> None:
                progress.update(bar, completed=finished, total=total)

            directory, record = run(config, backend, registry, args.out, run_id=args.run_id,
                                    overwrite=args.overwrite, progress=advance, batch_tokens=args.batch_tokens)
        console.print(score_table(record))
        sensitivity = [row for row in template_sensitivity(record) if row["templates"] > 1]
        if sensitivity:
            console.print(sensitivity_table(sensitivity))
        if any("group" in score for score in record["scores"]):
            console.print(group_table(record))
        console.print(f"run record: [bold]{directory}[/]")
        records.append(record)
    console.print(cluster_table(records))


def tasks_command(args: argparse.Namespace, console: Console) -> None:
    registry = Registry(args.task_dir)
    if args.tasks_command != "show":
        console.print(task_list_table(registry.clusters()))
        return
    task = registry.get(args.name)
    backends = [None]
    if args.chat_model:
        from harness.engine import HFBackend

        backends.append(HFBackend(args.chat_model))
    data = {"data_dirs": tuple(args.data_dir), "data_folders": tuple(args.data)}
    for backend in backends:
        for shots in (0, args.shots):
            _show_prompts(task, shots, args.row, args.seed, backend, console, data)


def _show_prompts(task, shots: int, row: int, seed: int, backend, console: Console, data: dict) -> None:
    config = RunConfig(tasks=task.name, shots=(shots,), limit=row + 1, seed=seed, chat="on" if backend else "off",
                       **data)
    planner = Planner(config, backend or NoChatTemplate())
    evaluation, pool = load_task_splits(task, config)
    samples = [s for s in planner.plan_task(task, evaluation, pool) if s.row_id == evaluation.ids[row]]
    layout = "chat" if backend else "plain"
    for sample in samples:
        answer = (
            f"options: {list(sample.row.options)}  answer: {sample.row.answer_text!r}"
            if sample.row.options else f"references: {list(sample.row.references or ())}"
        )
        title = escape(f"{task.name} / {sample.template.id} [{sample.template.hash}]  {shots}-shot, {layout}")
        console.print(Panel(escape(sample.prompt), title=title, subtitle=escape(answer), title_align="left",
                            subtitle_align="left", highlight=False))


def templates_command(args: argparse.Namespace, console: Console) -> None:
    """`harness templates import-promptsource`: the task's kind decides whether choices become options."""
    from harness.promptsource import import_promptsource

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
    console.print(f"converted {len(report.written)} of {report.total} templates ({kind} task {args.task!r}) "
                  f"into [bold]{escape(str(out))}[/]", highlight=False)


def tune_command(args: argparse.Namespace, console: Console) -> None:
    """`harness tune`: mixture table, training with a progress bar, checkpoint + training_manifest.json."""
    from harness.tune.mixture import MixtureConfig, expand_held_out, mixture_table
    from harness.tune.run import prepare_mixture, prepare_output, train_and_record
    from harness.tune.trainer import TrainConfig

    registry = Registry(args.task_dir)
    held_out = tuple(c.strip() for c in args.held_out.split(",") if c.strip())
    if not held_out:
        raise HarnessError("--held-out needs at least one cluster name (see `harness tasks`)")
    expand_held_out(registry, held_out)  # an unknown cluster fails before any model loads
    mixture_config = MixtureConfig(
        held_out_clusters=held_out, tasks=args.tasks, examples_per_task_cap=args.cap, total_examples=args.total,
        fewshot_fraction=args.fewshot_fraction, max_shots=args.max_shots, seed=args.seed,
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
    state = prepare_output(args.out, args.base, args.resume)
    with console.status("building the training mixture"):
        mixture = prepare_mixture(registry, args.base, mixture_config, args.chat)
    console.print(mixture_table(mixture))
    if state.resume_from is not None:
        console.print(f"resuming from [bold]{escape(str(state.resume_from))}[/]", highlight=False)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tokens/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("training", total=args.steps, loss="-", speed="-")

        def advance(p) -> None:
            progress.update(bar, completed=p.step, total=p.steps, loss=f"{p.loss:.4f}", speed=f"{p.tokens_per_s:.0f}")

        result = train_and_record(mixture, args.base, train_config, args.out, state, on_progress=advance)
    if result.summary is None:
        console.print(f"[bold]{escape(str(args.out))}[/] already holds this finished tuning; nothing to do",
                      highlight=False)
    else:
        s = result.summary
        console.print(f"trained {s.steps} steps: final loss {s.final_loss:.4f}, {s.tokens_seen} tokens, "
                      f"{s.tokens_per_s:.0f} tokens/s", highlight=False)
    console.print(f"checkpoint: [bold]{escape(str(args.out))}[/]  manifest: {escape(str(result.manifest_path))} "
                  f"(mixture {result.manifest.mixture_hash[:12]})", highlight=False)
