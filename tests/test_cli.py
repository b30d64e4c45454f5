"""The command line: listing, showing, running a user's task from files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from tests.test_registry import TASK, make_task


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_tasks_lists_clusters_with_template_counts(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for cluster in ("arithmetic", "comparison", "extraction", "list_operations", "string_transform"):
        assert cluster in out


def test_tasks_show_renders_every_template_zero_and_k_shot(capsys):
    assert main(["tasks", "show", "parity", "--shots", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("0-shot, plain") == 6 and out.count("2-shot, plain") == 6
    assert "Label 845 as even or odd." in out


def test_user_task_from_local_files_runs_end_to_end(tiny_models, tmp_path, capsys):
    make_task(tmp_path)
    rows = [{"text": f"statement {i}", "label": i % 2} for i in range(5)]
    (tmp_path / "tasks" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--task-dir", str(tmp_path / "tasks"),
                 "--tasks", "mine", "--out", str(tmp_path / "out"), "--run-id", "r"])
    assert code == 0, capsys.readouterr().err
    samples = [json.loads(line) for line in (tmp_path / "out" / "r" / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [f"Is statement {i} true?" for i in range(5)]
    assert [s["answer_index"] for s in samples] == [0, 1, 0, 1, 0]
    record = json.loads((tmp_path / "out" / "r" / "run.json").read_text())
    assert record["tasks"][0]["file_sha256"] and record["tasks"][0]["templates"][0]["hash"]
    assert record["model"]["weights_sha256"] and record["environment"]["packages"]["torch"]
    assert record["scores"][0]["n"] == 5


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--model", "/no/such/model", "--tasks", "parity"], "/no/such/model: cannot load a causal LM"),
    (["run", "--tasks", "no_such_task"], "unknown task or cluster 'no_such_task'"),
    (["tasks", "show", "no_such_task"], "unknown task 'no_such_task'"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys):
    assert main(args) == 2
    assert expected in error_line(capsys)


def test_malformed_task_file_in_task_dir(tmp_path, capsys):
    make_task(tmp_path, TASK.replace("kind: choice", "kind: pick"))
    assert main(["tasks", "--task-dir", str(tmp_path / "tasks")]) == 2
    assert "mytask.yaml: field 'kind' must be 'choice' or 'generate'" in error_line(capsys)


@pytest.mark.parametrize(("rows", "expected"), [
    ("", "split 'test' of local files"),
    ('{"other": 1, "label": 0}\n',
     "mytask.yaml: template t1.yaml uses field 'text', missing from the rows of local files"),
    ('{"text": "a", "label": 7}\n', "row 0 of task 'mytask': answer index 7 is outside the 2 options"),
])
def test_bad_rows_fail_before_a_run_directory_looks_complete(tiny_models, tmp_path, capsys, rows, expected):
    make_task(tmp_path)
    (tmp_path / "tasks" / "rows.jsonl").write_text(rows)
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--task-dir", str(tmp_path / "tasks"),
                 "--tasks", "mytask", "--out", str(tmp_path / "out"), "--run-id", "r"])
    assert code == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "out" / "r" / "run.json").exists()


def test_shots_beyond_the_fewshot_pool(tiny_models, tmp_path, capsys):
    task = TASK.replace("  eval_split: test\n", "  eval_split: test\n  fewshot_split: test\n")
    make_task(tmp_path, task)
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--task-dir", str(tmp_path / "tasks"),
                 "--tasks", "mytask", "--shots", "3", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "3-shot needs 3 exemplars but the few-shot split 'test' has 0" in error_line(capsys)


def test_invalid_model_folder(tmp_path, capsys):
    folder = Path(tmp_path / "broken")
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert main(["run", "--model", str(folder), "--tasks", "parity"]) == 2
    assert "broken: cannot load a causal LM" in error_line(capsys)


def test_data_dir_points_a_task_at_local_rows(tiny_models, tmp_path, capsys):
    make_task(tmp_path)
    local = tmp_path / "local" / "mytask"
    local.mkdir(parents=True)
    (local / "val.jsonl").write_text('{"text": "local row", "label": 1}\n')
    task = TASK.replace("eval_split: test", "eval_split: validation")
    make_task(tmp_path, task)
    code = main(["run", "--model", str(tiny_models["tiny-llama"]), "--task-dir", str(tmp_path / "tasks"),
                 "--tasks", "mytask", "--data-dir", str(tmp_path / "local"), "--out", str(tmp_path / "out"),
                 "--run-id", "r"])
    assert code == 0, capsys.readouterr().err
    sample = json.loads((tmp_path / "out" / "r" / "samples.jsonl").read_text())
    assert sample["prompt"] == "Is local row true?" and sample["answer_index"] == 1
    record = json.loads((tmp_path / "out" / "r" / "run.json").read_text())
    assert record["config"]["data_dirs"] == [str((tmp_path / "local").resolve())]


def test_the_score_table_shows_every_metric_of_a_generation_task(tmp_path, capsys):
    """extract_city declares exact_match and f1: both get a line per template, not only the first."""
    assert main(["run", "--backend", "scripted", "--model", "dry", "--tasks", "extract_city", "--limit", "3",
                 "--templates", "all", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    record = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    templates = {score["template"] for score in record["scores"]}
    table_lines = [line for line in out.splitlines() if "extract_city" in line]
    for metric in ("exact_match", "f1"):
        assert sum(metric in line for line in table_lines) == len(templates), metric
