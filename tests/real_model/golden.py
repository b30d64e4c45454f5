"""Golden per-sample scores of the real model on shared RTE, CB and COPA rows, and how to record them.

The golden file pins what the harness computes for a real checkpoint, so a change anywhere between
a template file and a log-likelihood (rendering, tokenisation, batching, the GGUF conversion) shows
up as a changed number. The values were recorded once with

    .venv/bin/python -m tests.real_model.golden

which also scores every golden prompt with lm-eval's hf backend, refuses to write values that
differ from lm-eval's by more than 1e-4 or choose another option, and keeps lm-eval's numbers beside
the harness's. (tests/real_model/test_scores.py re-checks lm-eval live on a subset: all of it would
cost minutes.) Re-record only after a deliberate change, and say why.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

SUPERGLUE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superglue"
GOLDEN_FILE = Path(__file__).with_name("golden_scores.json")
# Two templates per task (rte and cb share both ids; copa has its own), plain prompts, 0 and 2 shots.
TASKS = "rte,cb,copa"
TEMPLATES = "instr_relation,q_options,completion_connective,q_options_what"
SHOTS = (0, 2)
LIMIT = 4
SEED = 1234


def golden_config() -> Any:
    from harness.eval.config import RunConfig

    return RunConfig(tasks=TASKS, templates=TEMPLATES, shots=SHOTS, limit=LIMIT, seed=SEED, chat="off",
                     data_dirs=(str(SUPERGLUE),))


def run_samples(backend: Any, out: Path) -> list[dict[str, Any]]:
    """The harness's samples of the golden run, in (task, template, shots, row) order."""
    from harness.eval.run import run
    from harness.tasks.registry import Registry

    directory, record = run(golden_config(), backend, Registry(), out)
    samples = [json.loads(line) for line in (directory / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == record.counts["samples"] > 0
    return sorted(samples, key=lambda s: (s["task"], s["template"], s["shots"], int(s["row_id"])))


def lm_eval_logged(samples: list[dict[str, Any]], hflm: Any, directory: Path) -> list[tuple[list, list]]:
    """(harness samples, lm-eval's logged samples) per (task, template, shots): lm-eval's hf backend
    scoring the harness's exact prompts and options."""
    from tests import lm_eval_bridge as bridge
    from tests.test_parity_lm_eval import group

    names = {}
    for (task, template, shots), members in group(samples, "task", "template", "shots").items():
        (prefix,) = {s["continuation_prefix"] for s in members}
        rows = [{"prompt": s["prompt"], "choices": s["options"], "label": s["answer_index"]} for s in members]
        name = f"real_{task}_{template}_{shots}"
        bridge.write_task(directory, name, rows, bridge.choice_config(prefix))
        names[name] = members
    logged = bridge.evaluate(hflm, directory, list(names))
    return [(members, logged[name]) for name, members in names.items()]


def sample_key(sample: dict[str, Any]) -> str:
    return f"{sample['task']}|{sample['template']}|{sample['shots']}|{sample['row_id']}"


def summary(sample: dict[str, Any]) -> dict[str, Any]:
    """What the golden file keeps of a sample: its prompt's hash, log-likelihoods and chosen option."""
    from harness.files import short_hash

    logprobs = [float(x) for x in sample["logprobs"]]
    return {"prompt_sha256": short_hash(sample["prompt"].encode()), "logprobs": logprobs,
            "chosen": max(range(len(logprobs)), key=logprobs.__getitem__)}


def golden_text(golden: dict[str, Any]) -> str:
    """The golden file's JSON with one line per sample, so a re-recording reads as a short diff."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden.items() if k != "samples"]
    samples = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in golden["samples"].items()]
    return "{\n" + ",\n".join(head) + ',\n "samples": {\n' + ",\n".join(samples) + "\n }\n}\n"


def main() -> int:
    from harness.engine import HFBackend
    from tests import lm_eval_bridge as bridge
    from tests.real_model.fetch import real_model
    from tests.test_parity_lm_eval import assert_choice_parity

    model, why = real_model()
    if model is None:
        sys.stderr.write(f"cannot record: {why}\n")
        return 1
    backend = HFBackend(str(model.folder), dtype="float32", device="cpu")
    with tempfile.TemporaryDirectory() as out:
        samples = run_samples(backend, Path(out) / "runs")
        pairs = lm_eval_logged(samples, bridge.make_hflm(model.folder, batch_size=8), Path(out) / "lm_eval")
    theirs = {}
    for members, logged in pairs:
        assert_choice_parity(members, logged)  # raises, writing nothing, where lm-eval disagrees
        theirs.update({sample_key(s): bridge.loglikelihoods(t) for s, t in zip(members, logged, strict=True)})
    golden = {"model": {"gguf_sha256": model.sha256, "file_type": model.file_type},
              "config": {"tasks": TASKS, "templates": TEMPLATES, "shots": list(SHOTS), "limit": LIMIT, "seed": SEED},
              "samples": {sample_key(s): {**summary(s), "lm_eval": theirs[sample_key(s)]} for s in samples}}
    GOLDEN_FILE.write_text(golden_text(golden), encoding="utf-8")
    sys.stdout.write(f"{len(samples)} samples written to {GOLDEN_FILE}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
