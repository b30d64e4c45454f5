"""The openai-completions backend against lm-eval's `local-completions` on one llama-cpp-python server.

Both clients score the same (context, continuation) pairs, rendered by the harness's planner from
the shared COPA and RTE rows, on the same server process and model, at each concurrency given; the
passes are interleaved (harness, lm-eval, harness, ...) so load on the machine falls on both alike,
and each figure is the median of the runs. The harness gets a fresh request store for every pass,
so nothing is answered from disk. lm-eval counts the context's tokens with the model's tokenizer
(`tokenizer_backend="huggingface"`) and sends text (`tokenized_requests=False`), as it does against
a server that takes no token ids.

The served GGUF is SmolLM2's with its tokenizer set to add BOS: without BOS, llama-cpp-python 0.3.36
echoes log-probabilities one token late (the backend refuses those answers, and lm-eval's would be
wrong), see tests/real_server/conftest.py. The script also reports how often the two clients pick
the same option, and the largest log-likelihood difference between them.

    .venv/bin/python bench/bench_server.py --copa 40 --rte 10 --concurrency 1,2,4 --runs 3

lm-eval's API models need its `api` extra's packages (`pip install tenacity`; aiohttp, requests and
tqdm are already there), which the project itself does not depend on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from harness.engine.openai_api import OpenAIBackend  # noqa: E402
from harness.engine.request_store import RequestStore  # noqa: E402


def workload(copa: int, rte: int) -> list[tuple[str, str]]:
    """(context, continuation) pairs: the first `copa` COPA questions, the `rte` shortest RTE prompts of
    its first 64 rows (llama-cpp-python's echo costs grow with the prompt)."""
    from harness.chat import PLAIN
    from harness.eval.config import RunConfig
    from harness.eval.plan import Planner, load_task_splits
    from harness.tasks.kinds import get_kind
    from harness.tasks.registry import Registry

    superglue = PROJECT_ROOT.parent / "shared" / "data" / "superglue"
    config = RunConfig(tasks="copa,rte", templates="completion_connective,instr_relation", shots=(0,),
                       limit=max(copa, 64), chat="off", data_dirs=(str(superglue),))
    planner, kind = Planner(config, PLAIN), get_kind("choice")
    pairs = []
    for task in Registry().select(config.tasks):
        evaluation, pool = load_task_splits(task, config)
        samples = planner.plan_task(task, evaluation, pool)
        chosen = samples[:copa] if task.name == "copa" else sorted(samples, key=lambda s: len(s.prompt))[:rte]
        for s in chosen:
            request = kind.request(task, s.prompt, s.row, planner.continuation_prefix(task, s.template))
            pairs += [(request.context, c) for c in request.continuations]
    return pairs


def harness_pass(url: str, pairs: list[tuple[str, str]], concurrency: int) -> tuple[float, list[float]]:
    from harness.engine.base import ChoiceRequest

    with tempfile.TemporaryDirectory() as folder:
        backend = OpenAIBackend("smollm2", base_url=url, concurrency=concurrency,
                                store=RequestStore(Path(folder) / "store.sqlite"))
        requests = [ChoiceRequest(context, (continuation,)) for context, continuation in pairs]
        started = time.perf_counter()
        found = {i: r for batch in backend.score(requests) for i, r in batch}
        seconds = time.perf_counter() - started
    return seconds, [found[i][0].logprob for i in range(len(pairs))]


def lm_eval_pass(url: str, tokenizer: str, pairs: list[tuple[str, str]], concurrency: int) -> tuple[float, list[float]]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    with contextlib.redirect_stderr(io.StringIO()):
        model = LocalCompletionsAPI(base_url=url + "/v1/completions", model="smollm2", tokenizer_backend="huggingface",
                                    tokenizer=tokenizer, tokenized_requests=False, num_concurrent=concurrency,
                                    max_retries=3, batch_size=1)
        instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        started = time.perf_counter()
        results = model.loglikelihood(instances, disable_tqdm=True)
        seconds = time.perf_counter() - started
    return seconds, [logprob for logprob, _ in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8765", help="the llama-cpp-python server")
    parser.add_argument("--tokenizer", default="/work/smollm/hf", help="SmolLM2's tokenizer, for lm-eval")
    parser.add_argument("--copa", type=int, default=40)
    parser.add_argument("--rte", type=int, default=10)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every pass's seconds here")
    args = parser.parse_args()
    pairs = workload(args.copa, args.rte)
    seconds: dict[str, dict[int, list[float]]] = {"harness": {}, "lm-eval": {}}
    scores: dict[str, list[float]] = {}
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        for _ in range(args.runs):
            for name in ("harness", "lm-eval"):
                took, values = (harness_pass(args.base_url, pairs, concurrency) if name == "harness"
                                else lm_eval_pass(args.base_url, args.tokenizer, pairs, concurrency))
                seconds[name].setdefault(concurrency, []).append(took)
                scores[name] = values
    difference = max(abs(a - b) for a, b in zip(scores["harness"], scores["lm-eval"], strict=True))
    lines = [f"{len(pairs)} requests ({args.copa} COPA + {args.rte} RTE questions, one request per option); "
             f"largest |harness - lm-eval| log-likelihood: {difference:.2e}", "",
             "| client | concurrency | median wall s | requests/s | runs (s) |", "|---|---|---|---|---|"]
    for name, by_concurrency in seconds.items():
        for concurrency, runs in by_concurrency.items():
            median = statistics.median(runs)
            lines.append(f"| {name} | {concurrency} | {median:.1f} | {len(pairs) / median:.2f} | "
                         f"{', '.join(f'{r:.1f}' for r in runs)} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"requests": len(pairs), "seconds": seconds, "max_difference": difference}))


if __name__ == "__main__":
    main()
