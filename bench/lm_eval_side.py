"""lm-eval 0.4.13's hf backend (`HFLM`) driven with the harness's requests, for the benchmark.

One `HFLM` per model is loaded once; its batch size is switched between calls (the attribute its
constructor sets), so every lm-eval figure comes from the same loaded weights the harness uses.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workloads import Workload


class LmEvalRunner:
    def __init__(self, path: Path, batch_sizes: list[int], trial_every: int = 3, device: str = "cpu",
                 dtype: str = "float32") -> None:
        from lm_eval.models.huggingface import HFLM

        with contextlib.redirect_stdout(io.StringIO()):
            self.lm = HFLM(pretrained=str(path), device=device, dtype=dtype, batch_size=batch_sizes[0])
        self.model = self.lm.model
        self.batch_sizes = batch_sizes
        self.trial_every = trial_every

    def _set_batch_size(self, batch_size: int | str) -> None:
        self.lm.batch_size_per_gpu = batch_size if batch_size == "auto" else int(batch_size)
        self.lm.batch_sizes = {}

    def detection_positions(self, workload: Workload) -> int:
        """Token positions lm-eval's `batch_size="auto"` probe feeds before any request: five
        forward passes of max_batch_size rows of the longest window (of max_length for generation)."""
        longest = self.lm.max_length
        if workload.choice:
            longest = max(len(self.lm.tok_encode(r.context + c)) for r in workload.choice for c in r.continuations)
        return 5 * self.lm.max_batch_size * longest

    def run(self, workload: Workload, batch_size: int | str,
            every: int = 1) -> tuple[list[list[float]], list[list[bool]], list[str]]:
        """Log-likelihoods, greedy flags and generations for the workload (every `every`-th request)."""
        from lm_eval.api.instance import Instance

        self._set_batch_size(batch_size)
        choice = workload.choice[::every]
        instances = [
            Instance(request_type="loglikelihood", doc={}, arguments=(r.context, c), idx=i)
            for r in choice for i, c in enumerate(r.continuations)
        ]
        generate = [
            Instance(request_type="generate_until", doc={}, idx=0, arguments=(
                r.context, {"until": list(r.stop), "max_gen_toks": r.max_new_tokens, "do_sample": False}))
            for r in workload.generate[::every]
        ]
        with contextlib.redirect_stdout(io.StringIO()):  # the auto batch-size probe prints
            scored = self.lm.loglikelihood(instances, disable_tqdm=True) if instances else []
            texts = self.lm.generate_until(generate, disable_tqdm=True) if generate else []
        lls, greedy, position = [], [], 0
        for request in choice:
            count = len(request.continuations)
            lls.append([float(ll) for ll, _ in scored[position: position + count]])
            greedy.append([bool(g) for _, g in scored[position: position + count]])
            position += count
        return lls, greedy, list(texts)

    def pick_batch_size(self, workload: Workload) -> tuple[int, dict[int, float]]:
        """The fastest fixed batch size on one pass over every `trial_every`-th request."""
        seconds = {}
        for batch_size in self.batch_sizes:
            start = time.perf_counter()
            self.run(workload, batch_size, every=self.trial_every)
            seconds[batch_size] = round(time.perf_counter() - start, 3)
        return min(seconds, key=seconds.__getitem__), seconds


def startup_lm_eval(runner: LmEvalRunner, backend: Any, directory: Path, spec: dict[str, Any],
                    stop_hook: Callable[..., None], stop: type[Exception], include_defaults: bool) -> float:
    """Seconds from building lm-eval's TaskManager to its first model call (`simple_evaluate`).

    lm-eval gets the harness's rendered prompts of the same task, template by template, as local
    JSONL tasks (written before the clock starts, as the harness's task files exist before its run).
    `include_defaults=True` is what the lm_eval command does: index its ~15k built-in task files too.
    """
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness.chat import PLAIN
    from harness.eval.config import RunConfig
    from harness.eval.plan import Planner, load_task_splits
    from harness.tasks.registry import Registry
    from tests import lm_eval_bridge as bridge

    config = RunConfig(tasks=spec["tasks"], shots=(spec["shots"],), limit=spec["limit"], chat="off")
    task = Registry().get(spec["tasks"])
    evaluation, pool = load_task_splits(task, config)
    planner = Planner(config, PLAIN)
    groups: dict[str, list[Any]] = {}
    for sample in planner.plan_task(task, evaluation, pool):
        groups.setdefault(sample.template.id, []).append(sample)
    names = []
    for template_id, samples in groups.items():
        name = f"startup_{template_id}"
        prefix = planner.continuation_prefix(task, samples[0].template)
        rows = [{"prompt": s.prompt, "choices": list(s.row.options), "label": s.row.answer_index} for s in samples]
        bridge.write_task(directory / "lm_eval", name, rows, bridge.choice_config(prefix))
        names.append(name)
    runner._set_batch_size(runner.batch_sizes[0])
    handle = runner.model.register_forward_pre_hook(stop_hook, with_kwargs=True)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            manager = TaskManager(include_path=str(directory / "lm_eval"), include_defaults=include_defaults)
            simple_evaluate(model=runner.lm, tasks=names, bootstrap_iters=0, task_manager=manager)
    except stop:
        return time.perf_counter() - start
    finally:
        handle.remove()
    raise RuntimeError("lm-eval finished without calling the model")
