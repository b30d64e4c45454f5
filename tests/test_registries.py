"""Metrics, row loaders, row generators and backends are found by name, and a bad name is one line."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import metrics, plugins
from harness.chat import PLAIN
from harness.cli import main
from harness.engine import registry as backends
from harness.engine.base import ChoiceRequest, GenerateRequest
from harness.engine.scripted import ScriptedBackend
from harness.errors import HarnessError
from harness.metrics import generate_metrics, headline_value, metric_names, register_metric
from harness.tasks import sources
from harness.tasks.registry import load_task
from harness.tasks.rows import load_split
from harness.tasks.sources import register_generator, register_loader


@pytest.fixture
def isolated(monkeypatch):
    """Registries whose additions end with the test (the plugins loaded first, so they stay)."""
    plugins.load_plugins()
    for table in (metrics._METRICS, sources._LOADERS, sources._GENERATORS, backends._BACKENDS):
        monkeypatch.setattr(table, "_entries", dict(table._entries))
        monkeypatch.setattr(table, "_origins", dict(table._origins))


def make_task(root: Path, data: str) -> Path:
    """A generate task named `toy` whose `data:` block is `data`, with one template."""
    (root / "tasks").mkdir(parents=True)
    (root / "templates" / "toy").mkdir(parents=True)
    template = 'prompt: "Say {{ word }}:"\ntags: {options: false, style: instruction}\n'
    (root / "templates" / "toy" / "ask.yaml").write_text(template)
    path = root / "tasks" / "toy.yaml"
    path.write_text(f"name: toy\ncluster: mine\nkind: generate\ndata:\n{textwrap.indent(data, '  ')}"
                    "target: answer\nmetrics: [exact_match]\ntemplates: toy\n")
    return path


# -- metrics ----------------------------------------------------------------------------------------


def test_built_in_metrics_are_listed_in_order_with_their_headlines():
    assert metric_names("choice") == ("acc", "acc_norm")
    assert metric_names("generate") == ("exact_match", "f1", "rouge_l", "niv2", "ifeval")
    assert [headline_value(m) for m in ("niv2", "ifeval", "f1", "acc")] == [
        "niv2_rouge_l", "prompt_level_strict_acc", "f1", "acc"]


def test_a_registered_metric_scores_generations_and_names_its_headline(isolated):
    @register_metric("shouting", headline="shouting_rate")
    def shouting(prediction, references, row):
        return {"shouting_rate": float(prediction.isupper()), "length": float(len(prediction))}

    assert metric_names("generate")[-1] == "shouting" and "shouting" not in metric_names("choice")
    assert headline_value("shouting") == "shouting_rate"
    assert generate_metrics("HI", ["hi"], ["exact_match", "shouting"], {}) == {
        "exact_match": 1.0, "shouting_rate": 1.0, "length": 2.0}


def test_an_unknown_metric_or_a_name_taken_twice_is_one_line(isolated):
    with pytest.raises(HarnessError, match=r"^unknown metric 'nope'; known: acc, acc_norm, exact_match, f1, "):
        generate_metrics("x", ["x"], ["nope"], {})
    with pytest.raises(HarnessError, match=r"^metric 'f1' is registered twice \(harness\.metrics:"):
        register_metric("f1")(lambda prediction, references, row: {})


def test_a_plugin_entry_point_registers_on_the_first_lookup_that_misses(isolated, monkeypatch, tmp_path):
    (tmp_path / "toy_harness_plugin.py").write_text(textwrap.dedent("""\
        from harness.metrics import register_metric

        @register_metric("toy_plugin_metric")
        def toy(prediction, references, row):
            return {"toy_plugin_metric": 1.0}
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("toy", "toy_harness_plugin", plugins.PLUGIN_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry] if group == entry.group else [])
    monkeypatch.setattr(plugins, "_plugins_loaded", False)
    assert generate_metrics("", [""], ["toy_plugin_metric"], {}) == {"toy_plugin_metric": 1.0}

    broken = importlib.metadata.EntryPoint("broken", "no_such_module_anywhere", plugins.PLUGIN_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    monkeypatch.setattr(plugins, "_plugins_loaded", False)
    with pytest.raises(HarnessError, match=r"^plugin 'broken' \(no_such_module_anywhere, entry point group "
                                           r"harness\.plugins\) failed to import: ModuleNotFoundError: ") as caught:
        metric_names("generate")
    assert len(str(caught.value).splitlines()) == 1


# -- row loaders and generators ---------------------------------------------------------------------


def test_a_registered_loader_gives_a_task_file_its_rows(isolated, tmp_path):
    calls = []

    @register_loader("toy_rows")
    def toy_rows(task, split, folder):
        calls.append((task.name, split, folder))
        return [{"word": w, "answer": w} for w in ("red", "green", "blue")]

    task = load_task(make_task(tmp_path, "loader: toy_rows\neval_split: test\n"))
    split = load_split(task, "test", limit=2)
    assert [r["word"] for r in split.rows] == ["red", "green"] and split.origin == "toy_rows loader split 'test'"
    assert calls == [("toy", "test", None)]


def test_a_registered_generator_gives_seeded_rows_with_positions(isolated, tmp_path):
    @register_generator("toy_words")
    def toy_words(rng, n):
        return [{"word": str(rng.randint(0, 999)), "answer": "x"} for _ in range(n)]

    task = load_task(make_task(tmp_path, "generator: toy_words\nseed: 3\nsizes: {test: 4}\neval_split: test\n"))
    rows = load_split(task, "test").rows
    assert [r["idx"] for r in rows] == [0, 1, 2, 3]
    assert list(rows) == sources.generate_rows("toy_words", 3, "test", 4)
    assert rows != tuple(sources.generate_rows("toy_words", 3, "train", 4))


@pytest.mark.parametrize(("data", "message"), [
    ("loader: nope\neval_split: test\n", "field 'data.loader' names unknown loader 'nope'; known: niv2"),
    ("generator: nope\nsizes: {test: 3}\neval_split: test\n",
     "field 'data.generator' names unknown generator 'nope'; known: add_numbers, compare_length, "),
])
def test_a_task_file_naming_an_unknown_source_is_one_line(tmp_path, data, message):
    path = make_task(tmp_path, data)
    with pytest.raises(HarnessError) as caught:
        load_task(path)
    assert str(caught.value).startswith(f"{path}: {message}") and len(str(caught.value).splitlines()) == 1


# -- backends ---------------------------------------------------------------------------------------


def test_a_registered_backend_is_built_by_name(isolated):
    @backends.register_backend("toy")
    def toy(model, **options):
        return ScriptedBackend(model, describe_extra={"options": options})

    assert backends.backend_names() == ("hf", "scripted", "openai-completions", "openai-chat", "toy")
    assert backends.get_backend("toy")("m", dtype="auto").describe() == {
        "model": "m", "local_path": None, "options": {"dtype": "auto"}}
    known = "hf, openai-chat, openai-completions, scripted, toy"
    with pytest.raises(HarnessError, match=rf"^unknown backend 'nope'; known: {known}$"):
        backends.get_backend("nope")


def test_listing_backends_imports_no_torch():
    script = ("import sys\nfrom harness.engine.registry import backend_names, get_backend\n"
              "assert backend_names()[:2] == ('hf', 'scripted'), backend_names()\nget_backend('hf')\n"
              "import harness.engine.base\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_the_scripted_backend_batches_skips_done_and_records_requests():
    requests = [GenerateRequest(f"p{i}", 4, ()) for i in range(5)]
    backend = ScriptedBackend(generate=lambda index, request: request.context.upper(), batch_size=2)
    assert list(backend.generate(requests, done={1, 2})) == [[(0, "P0")], [(3, "P3")], [(4, "P4")]]
    assert backend.requests == requests
    (batch,) = backend.score([ChoiceRequest("q", (" a", " bbb"))])
    assert [(r.logprob, r.num_tokens) for r in batch[0][1]] == [(-2.0, 2), (-4.0, 4)]
    assert backend.describe() == {"model": "scripted", "local_path": None}
    assert backend.chat_format is PLAIN and backend.batch_tokens is None


def test_a_dry_run_from_the_command_line_writes_a_complete_run(tmp_path, capsys):
    assert main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "parity", "--limit", "3",
                 "--out", str(tmp_path)]) == 0
    (run_json,) = tmp_path.glob("*/run.json")
    record = json.loads(run_json.read_text())
    samples = [json.loads(line) for line in (run_json.parent / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 6 and len(record["scores"]) == 6 and all(s["n"] == 3 for s in record["scores"])
    for sample in samples:
        continuations = [sample["continuation_prefix"] + o for o in sample["options"]]
        assert sample["logprobs"] == [-float(len(c)) for c in continuations]
    assert "dry" in capsys.readouterr().out


def test_options_the_scripted_backend_does_not_take_are_refused_in_one_line(tmp_path, capsys):
    assert main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "parity", "--static-cache",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backend 'scripted' does not take --static-cache; drop it" in err
    assert main(["run", "--backend", "nope", "--model", "dry", "--out", str(tmp_path)]) == 2
    assert "unknown backend 'nope'; known: hf, openai-chat, openai-completions, scripted" in capsys.readouterr().err
