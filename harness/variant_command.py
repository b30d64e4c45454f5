"""`harness templates vary`: generated format variants of a task's templates, one line per file.

Kept apart from `commands.py` (which calls it) as the one command of its kind: it writes files and
prints, and needs nothing of evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from harness.tasks.registry import Registry
from harness.tasks.variants import plan_variants, write_variants

DEFAULT_OUT = Path("templates-vary")


def _describe(choices: dict) -> str:
    shown = {k: v for k, v in choices.items() if k not in ("source", "source_hash")}
    return " ".join(f"{name}={json.dumps(value)}" for name, value in shown.items())


def vary_command(args: argparse.Namespace, console: Console) -> None:
    """Writes `--n` variants under `--out` (default ./templates-vary) and says how to evaluate them."""
    registry = Registry(args.task_dir)
    task = registry.get(args.task)
    plan = plan_variants(task, args.n, args.seed)
    out = args.out or DEFAULT_OUT
    written = write_variants(plan, out, overwrite=args.overwrite, sources=args.with_sources)
    for variant, path in written.files:
        console.print(f"wrote {path}  {_describe(variant.format)}", markup=False, highlight=False)
    for template_id, reason in plan.unvaried:
        console.print(f"not varied {template_id}: {reason}", markup=False, highlight=False)
    sources = len({variant.source.id for variant, _ in written.files})
    fewer = "" if len(written.files) == plan.requested else (
        f" (of {plan.requested} asked for: the grammar allows no more distinct forms)")
    copied = f", with copies of its {len(written.sources)} own templates" if written.sources else ""
    console.print(f"{len(written.files)} variants{fewer} of {sources} of the {len(task.templates)} templates of "
                  f"task {task.name!r} in {written.template_dir}{copied}; task file {written.task_file}", markup=False,
                  highlight=False)
    console.print(f"evaluate them: harness run --tasks {task.name} --task-dir {written.task_file.parent}",
                  markup=False, highlight=False)
