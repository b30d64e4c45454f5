"""tasks x templates x shots x rows -> requests -> backend -> scored samples -> run record.

Every sample is keyed by (task, template id, template hash, shots, row id). The plan is a pure
function of the command and the files it reads, so the same command after a crash plans the same
samples, skips the ones already on disk, and ends with the same record.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.data import DataOverrides, FewshotSampler, Split, load_split
from harness.engine.base import Backend, ChoiceRequest, GenerateRequest
from harness.errors import HarnessError
from harness.metrics import choice_metrics, flatten, generate_metrics, headline_value, mean_and_stderr
from harness.prompts import PromptRenderer, RenderedRow, Turn, chat_messages, plain_context
from harness.registry import PROJECT_ROOT, Registry, short_hash
from harness.results import RunStore, environment_info
from harness.tasks import Task, Template
from harness.tune.manifest import MANIFEST_FILE, DeclaredSeen, TrainingManifest, read_manifest, seen_status

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called as (phase, finished, total) after every batch; the CLI draws it, the library never prints."""


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that changes its numbers (the model aside)."""

    tasks: str = "builtin"
    shots: tuple[int, ...] = (0,)
    templates: str = "all"
    limit: int | None = None
    seed: int = 1234
    chat: str = "auto"
    fewshot_multiturn: bool = True
    data_dirs: tuple[str, ...] = ()
    data_folders: tuple[tuple[str, str], ...] = ()

    @property
    def data_overrides(self) -> DataOverrides:
        return DataOverrides(self.data_dirs, self.data_folders)

    def __post_init__(self) -> None:
        if self.chat not in ("auto", "on", "off"):
            raise HarnessError(f"--chat must be auto, on or off, got {self.chat!r}")
        if any(k < 0 for k in self.shots) or not self.shots:
            raise HarnessError(f"--shots must be non-negative integers, got {self.shots}")
        if self.limit is not None and self.limit < 1:
            raise HarnessError(f"--limit must be at least 1, got {self.limit}")


@dataclass(frozen=True)
class PlannedSample:
    key: str
    task: Task
    template: Template
    shots: int
    row_id: str
    prompt: str
    row: RenderedRow
    exemplar_ids: tuple[str, ...]
    source: dict[str, Any]


def sample_key(task: str, template: Template, shots: int, row_id: str) -> str:
    return f"{task}|{template.id}|{template.hash}|{shots}|{row_id}"


def select_templates(task: Task, spec: str) -> list[Template]:
    if spec == "all":
        return list(task.templates)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [t for t in task.templates if t.id in wanted]
    if not chosen:
        known = ", ".join(t.id for t in task.templates)
        raise HarnessError(f"--templates {spec!r} matches no template of task {task.name!r} (its templates: {known})")
    return chosen


class NoChatTemplate:
    """Stands in for a backend when prompts are rendered without a model (plain layout only)."""

    def apply_chat_template(self, messages: list[dict[str, str]]) -> None:
        return None


class Planner:
    """Renders every sample of a run: zero/k-shot, plain or through the model's chat template."""

    def __init__(self, config: RunConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.renderer = PromptRenderer()
        self.chat = self._resolve_chat()

    def _resolve_chat(self) -> bool:
        if self.config.chat == "off":
            return False
        has_template = self.backend.apply_chat_template([{"role": "user", "content": "x"}]) is not None
        if self.config.chat == "on" and not has_template:
            raise HarnessError("--chat on: the model's tokenizer has no chat template; use --chat off")
        return has_template

    def context(self, task: Task, template: Template, turns: list[Turn]) -> str:
        delimiter = template.target_delimiter if template.target_delimiter is not None else task.target_delimiter
        if not self.chat:
            return plain_context(turns, delimiter, task.fewshot_delimiter)
        messages = chat_messages(turns, delimiter, task.fewshot_delimiter, self.config.fewshot_multiturn)
        text = self.backend.apply_chat_template(messages)
        assert text is not None, "chat is only on when the tokenizer has a chat template"
        return text

    def continuation_prefix(self, task: Task, template: Template) -> str:
        """The text between prompt and option: the target delimiter, or nothing under a chat template."""
        if self.chat:
            return ""
        return template.target_delimiter if template.target_delimiter is not None else task.target_delimiter

    def plan_task(self, task: Task, evaluation: Split, pool: Split | None) -> list[PlannedSample]:
        self.renderer.check_fields(task, evaluation.columns, evaluation.origin)
        if pool is not None:
            self.renderer.check_fields(task, pool.columns, pool.origin)
        sampler = (
            FewshotSampler(pool, self.config.seed, pool.name == evaluation.name, task.data.fewshot_sampler == "first_n")
            if pool is not None else None
        )
        planned = []
        for template in select_templates(task, self.config.templates):
            for shots in self.config.shots:
                for row_id, row in zip(evaluation.ids, evaluation.rows, strict=True):
                    exemplars = sampler.sample(row_id, shots) if sampler else []
                    turns = [
                        Turn(rendered.prompt, rendered.answer_text)
                        for rendered in (self.renderer.render_row(task, template, r, i) for i, r in exemplars)
                    ]
                    rendered = self.renderer.render_row(task, template, row, row_id)
                    turns.append(Turn(rendered.prompt))
                    planned.append(PlannedSample(
                        sample_key(task.name, template, shots, row_id), task, template, shots, row_id,
                        self.context(task, template, turns), rendered, tuple(i for i, _ in exemplars), row,
                    ))
        return planned


def load_task_splits(task: Task, config: RunConfig) -> tuple[Split, Split | None]:
    evaluation = load_split(task, task.data.eval_split, config.limit, config.data_overrides)
    if max(config.shots) == 0:
        return evaluation, None
    if not task.data.fewshot_split:
        raise HarnessError(f"{task.path}: --shots {max(config.shots)} needs 'data.fewshot_split' in the task file")
    # The pool is the whole few-shot split, even when --limit cuts the evaluated rows.
    return evaluation, load_split(task, task.data.fewshot_split, None, config.data_overrides)


def _sample_record(sample: PlannedSample, extra: dict[str, Any]) -> dict[str, Any]:
    record = {
        "key": sample.key, "task": sample.task.name, "cluster": sample.task.cluster,
        "template": sample.template.id, "template_hash": sample.template.hash, "shots": sample.shots,
        "row_id": sample.row_id, "exemplars": list(sample.exemplar_ids), "prompt": sample.prompt,
    }
    if sample.task.report_by:
        record["groups"] = {field: str(sample.source.get(field)) for field in sample.task.report_by}
    record.update(extra)
    return record


def execute(
    plan: list[PlannedSample], backend: Backend, store: RunStore, prefixes: dict[str, str],
    progress: ProgressCallback | None = None,
) -> None:
    """Run every sample not yet in the store, writing each batch durably as it finishes."""
    finished = sum(1 for s in plan if s.key in store.samples)
    total = len(plan)
    if progress:
        progress("requests", finished, total)

    choice = [s for s in plan if s.task.kind == "choice"]
    requests = [
        ChoiceRequest(s.prompt, tuple(prefixes[s.key] + o for o in s.row.options or ())) for s in choice
    ]
    done = {i for i, s in enumerate(choice) if s.key in store.samples}
    for batch in backend.score(requests, done):
        records = []
        for index, results in batch:
            sample = choice[index]
            logprobs = [r.logprob for r in results]
            assert sample.row.options is not None and sample.row.answer_index is not None
            metrics = choice_metrics(logprobs, sample.row.options, sample.row.answer_index)
            records.append(_sample_record(sample, {
                "options": list(sample.row.options), "continuation_prefix": prefixes[sample.key],
                "answer_index": sample.row.answer_index, "logprobs": logprobs,
                "is_greedy": [r.is_greedy for r in results], "num_tokens": [r.num_tokens for r in results],
                "metrics": {m: metrics[m] for m in sample.task.metrics},
            }))
        finished += len([r for r in records if r["key"] not in store.samples])
        store.append(records)
        if progress:
            progress("requests", finished, total)

    generate = [s for s in plan if s.task.kind == "generate"]
    gen_requests = [
        GenerateRequest(s.prompt, s.task.generation.max_new_tokens, s.task.generation.stop) for s in generate
    ]
    done = {i for i, s in enumerate(generate) if s.key in store.samples}
    for batch in backend.generate(gen_requests, done):
        records = []
        for index, response in batch:
            sample = generate[index]
            assert sample.row.references is not None
            records.append(_sample_record(sample, {
                "response": response, "references": list(sample.row.references),
                "metrics": generate_metrics(response, sample.row.references, sample.task.metrics, sample.source),
            }))
        finished += len([r for r in records if r["key"] not in store.samples])
        store.append(records)
        if progress:
            progress("requests", finished, total)


def _score_entry(members: list[PlannedSample], samples: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """Every metric of a group of samples: mean and bootstrap stderr over the flattened values."""
    names = list(dict.fromkeys(name for s in members for name in samples[s.key]["metrics"]))
    metrics = {}
    for name in names:
        mean, stderr = mean_and_stderr(flatten([samples[s.key]["metrics"][name] for s in members]), seed)
        metrics[name] = {"mean": mean, "stderr": stderr}
    return {"n": len(members), "primary_metric": headline_value(members[0].task.metrics[0]), "metrics": metrics}


def summarize(plan: list[PlannedSample], samples: dict[str, dict[str, Any]], seed: int,
              manifest: TrainingManifest | None = None, declared: DeclaredSeen | None = None,
              ) -> list[dict[str, Any]]:
    """Scores per (task, template, shots), and per value of each `report_by` row field.

    With the checkpoint's training manifest, each entry also says how its (task, template) relates
    to the training: `seen_status` (see `harness.tune.manifest.seen_status`); with tasks declared
    by `--seen` instead, the label comes from the declaration (`DeclaredSeen.status`)."""
    groups: dict[tuple[str, str, int, str, str], list[PlannedSample]] = {}
    for sample in plan:
        base = (sample.task.name, sample.template.id, sample.shots)
        groups.setdefault((*base, "", ""), []).append(sample)
        for field in sample.task.report_by:
            groups.setdefault((*base, field, str(sample.source.get(field))), []).append(sample)
    scores = []
    for (task_name, template_id, shots, field, value), members in groups.items():
        task, template = members[0].task, members[0].template
        entry: dict[str, Any] = {
            "task": task_name, "cluster": task.cluster, "template": template_id, "template_hash": template.hash,
            "template_tags": asdict(template.tags), "shots": shots,
        }
        if manifest is not None:
            entry["seen_status"] = seen_status(manifest, task_name, template_id, template.hash, task.cluster)
        elif declared is not None:
            entry["seen_status"] = declared.status(task_name, task.cluster)
        if field:
            entry["group"] = {"field": field, "value": value}
        entry.update(_score_entry(members, samples, seed))
        scores.append(entry)
    return scores


def run_spec(config: RunConfig, backend: Backend, tasks: list[Task], splits: dict[str, Split], chat: bool,
             batch_tokens: int | None, manifest: TrainingManifest | None = None,
             declared: DeclaredSeen | None = None) -> dict[str, Any]:
    """What the run computes; equal specs mean equal results, so resume compares specs.

    A tuned checkpoint's manifest enters the spec (mixture hash, held-out clusters), so a checkpoint
    re-tuned into the same folder never resumes into the old run; untuned models' specs lack the key.
    Tasks declared seen with `--seen` change the record's labels, so they enter the spec too, and
    only when given: runs without them keep the specs (and run ids) they always had."""
    spec = {
        "harness_version": __version__,
        "model": backend.describe(),
        "config": {**asdict(config), "chat_applied": chat},
        "engine": {"batch_tokens": batch_tokens},
        "tasks": [
            {
                "name": t.name, "cluster": t.cluster, "kind": t.kind, "file": str(t.path), "file_sha256": t.hash,
                "data": {"origin": splits[t.name].origin, "eval_split": t.data.eval_split,
                         "fewshot_split": t.data.fewshot_split, "rows": len(splits[t.name])},
                "metrics": list(t.metrics),
                "generation": asdict(t.generation) if t.kind == "generate" else None,
                "templates": [
                    {"id": tp.id, "hash": tp.hash, "file": str(tp.path), "tags": asdict(tp.tags)}
                    for tp in select_templates(t, config.templates)
                ],
            }
            for t in tasks
        ],
    }
    if manifest is not None:
        spec["training_manifest"] = manifest_summary(manifest)
    if declared is not None:
        spec["declared_seen"] = {"tasks": sorted(declared.tasks), "clusters": sorted(declared.clusters)}
    return spec


def manifest_summary(manifest: TrainingManifest) -> dict[str, Any]:
    """What a run record keeps of the checkpoint's training manifest."""
    return {"mixture_hash": manifest.mixture_hash, "held_out_requested": list(manifest.held_out_requested),
            "held_out_clusters": list(manifest.held_out_clusters), "base_model": manifest.base_model,
            "base_weights_hash": manifest.base_weights_hash}


def declare_seen(registry: Registry, names: str) -> DeclaredSeen:
    """The tasks and clusters named by `--seen` (task and/or cluster names, as `--tasks` takes them)."""
    try:
        tasks = registry.select(names)
    except HarnessError as exc:
        raise HarnessError(f"--seen: {exc}") from None
    return DeclaredSeen(frozenset(t.name for t in tasks), frozenset(t.cluster for t in tasks))


def refuse_seen_with_manifest(model_folder: str | Path | None) -> None:
    """`--seen` and a training manifest would both label the scores; refuse the pair rather than let
    one silently win."""
    if model_folder is not None and (Path(model_folder) / MANIFEST_FILE).is_file():
        raise HarnessError(f"{model_folder}: has a {MANIFEST_FILE}, which already labels seen and held-out "
                           "tasks; drop --seen (it is for models without one)")


def seen_source(manifest: TrainingManifest | None, declared: DeclaredSeen | None) -> str:
    """Where a record's seen_status labels come from: "manifest", "--seen", or "none" (no labels)."""
    return "manifest" if manifest is not None else "--seen" if declared is not None else "none"


def checkpoint_manifest(backend: Backend) -> TrainingManifest | None:
    """The training manifest beside a local model folder, or None (a hub id, an untuned model)."""
    local_path = backend.describe().get("local_path")
    return read_manifest(Path(local_path)) if local_path else None


def warn_contamination(manifest: TrainingManifest, tasks: list[Task]) -> None:
    """Log every evaluated task that the manifest says was trained on although its cluster was held out."""
    trained = {record.name: record for record in manifest.tasks}
    for task in tasks:
        if task.cluster in manifest.held_out_clusters and task.name in trained:
            log.warning("contamination: task %r is in held-out cluster %r, yet the checkpoint was trained on it "
                        "(%d examples, training manifest cluster %r); its held-out scores are not held out",
                        task.name, task.cluster, trained[task.name].examples, trained[task.name].cluster)


def default_run_id(model: str, spec: dict[str, Any]) -> str:
    import json

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"
    return f"{name}-{short_hash(json.dumps(spec, sort_keys=True).encode())[:10]}"


def run(
    config: RunConfig,
    backend: Backend,
    registry: Registry,
    out: Path,
    *,
    run_id: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    batch_tokens: int | None = None,
    seen: str | None = None,
    reuse_complete: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Plan, execute (resuming if the run directory has finished samples) and record one run.

    With `reuse_complete`, a complete run of the same spec in the run directory is returned as it is
    (workflows such as the cluster sweep rerun every step and must find finished ones).

    `seen` declares the tasks a model without a training manifest was tuned on (see `declare_seen`);
    a checkpoint with a manifest is labelled by it, and both at once is refused."""
    started = time.time()
    tasks = registry.select(config.tasks)
    declared = declare_seen(registry, seen) if seen is not None else None
    if declared is not None:
        refuse_seen_with_manifest(backend.describe().get("local_path"))
    manifest = checkpoint_manifest(backend)
    if manifest is not None:
        warn_contamination(manifest, tasks)
    planner = Planner(config, backend)
    tuned_chat = manifest.mixture_config.get("chat") if manifest is not None else None
    if isinstance(tuned_chat, bool) and tuned_chat != planner.chat:
        log.warning("the checkpoint was tuned with chat %s and is evaluated with chat %s: its seen templates are "
                    "not rendered as in training", "on" if tuned_chat else "off", "on" if planner.chat else "off")
    plan: list[PlannedSample] = []
    evaluation_splits: dict[str, Split] = {}
    for task in tasks:
        evaluation, pool = load_task_splits(task, config)
        evaluation_splits[task.name] = evaluation
        plan += planner.plan_task(task, evaluation, pool)
    spec = run_spec(config, backend, tasks, evaluation_splits, planner.chat, batch_tokens, manifest, declared)
    directory = out / (run_id or default_run_id(spec["model"]["model"], spec))
    if reuse_complete and not overwrite and (record := RunStore.completed(directory, spec)) is not None:
        return directory, record
    store = RunStore(directory, spec, overwrite=overwrite)
    resumed = len(store.samples)
    if resumed:
        log.info("resuming %s: %d of %d samples already done", directory, resumed, len(plan))
    planned_at = time.time()
    prefixes = {s.key: planner.continuation_prefix(s.task, s.template) for s in plan if s.task.kind == "choice"}
    execute(plan, backend, store, prefixes, progress)
    finished_at = time.time()
    record = {
        **spec,
        "run_id": directory.name,
        "status": "complete",
        "seen_source": seen_source(manifest, declared),
        "environment": environment_info(PROJECT_ROOT),
        "counts": {"samples": len(plan)},
        "scores": summarize(plan, store.samples, config.seed, manifest, declared),
        "timings": {
            "started_unix": started, "finished_unix": finished_at, "resumed_samples": resumed,
            "plan_seconds": planned_at - started, "inference_seconds": finished_at - planned_at,
        },
    }
    store.finalize(record, [s.key for s in plan])
    return directory, record
