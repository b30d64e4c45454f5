"""`harness run --budget`: the design's cells computed and recorded, extended by a larger budget or
none into exactly the full run, and never recomputing or discarding a cell already on disk."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.eval.budget_design import budget_size, design_cells
from harness.eval.budget_plan import Budget
from harness.eval.config import RunConfig
from harness.eval.record import RunRecord
from harness.eval.run import run
from harness.eval.store import RunStore, load_run
from harness.tasks.registry import Registry

CONFIG = RunConfig(tasks="parity,add_numbers", shots=(0, 2), limit=12, seed=7)
TEMPLATES, ROWS = 6, 12  # each built-in task has 6 templates; --limit 12 rows


class Counting:
    """A backend that counts the requests it answers, to show which cells a run computed."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.answered = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def score(self, requests, skip=frozenset()):
        for batch in self._backend.score(requests, skip):
            self.answered += len(batch)
            yield batch

    def generate(self, requests, skip=frozenset()):
        for batch in self._backend.generate(requests, skip):
            self.answered += len(batch)
            yield batch


def lines(directory: Path) -> list[str]:
    return (directory / "samples.jsonl").read_text(encoding="utf-8").splitlines()


def assert_same_cells(computed: list[str], full: dict[str, str]) -> None:
    """Each computed cell is the full run's: prompt, options, answers, metrics and generations equal;
    log-likelihoods equal up to float32 rounding, as a batch of other shapes computes them (a cell of
    a budgeted run shares its batch with other cells than in the full run); with batch-invariant
    forwards they are equal bit for bit (the test below)."""
    assert computed
    for line in computed:
        cell, reference = json.loads(line), json.loads(full[json.loads(line)["key"]])
        assert {k: v for k, v in cell.items() if k != "logprobs"} == {
            k: v for k, v in reference.items() if k != "logprobs"}
        assert cell.get("logprobs", []) == pytest.approx(reference.get("logprobs", []), rel=1e-6, abs=1e-6)


def without_timings(directory: Path) -> dict:
    record = json.loads((directory / "run.json").read_text())
    record.pop("timings")
    return record


@pytest.fixture(scope="module")
def full_run(plain_backend, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("full")
    directory, _ = run(CONFIG, plain_backend, Registry(), out, run_id="r")
    return directory


def test_budget_flag_parses_fractions_percentages_and_cell_counts():
    assert Budget.parse("0.1") == Budget(0.1, "0.1")
    assert Budget.parse("10%").size == pytest.approx(0.1)
    assert Budget.parse(".25").size == 0.25
    assert Budget.parse("1.0").size == 1.0
    assert Budget.parse("500") == Budget(500, "500")
    for bad in ("0", "0.0", "abc", "150%", "-3", "1.5", "0.1.2", ""):
        with pytest.raises(HarnessError, match="--budget"):
            Budget.parse(bad)


def test_a_budgeted_run_computes_the_design_cells_and_equals_the_full_run_on_them(plain_backend, full_run,
                                                                                   tmp_path, one_torch_thread):
    counting = Counting(plain_backend)
    directory, record = run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.25"))
    design = budget_size(0.25, TEMPLATES * ROWS)
    assert [(c.task, c.shots, c.templates, c.rows, c.design, c.computed) for c in record.budget.cells] == [
        (task, shots, TEMPLATES, ROWS, design, design) for task in ("parity", "add_numbers") for shots in (0, 2)]
    assert record.budget.requested == "0.25" and record.budget.seed == 7
    assert counting.answered == record.counts["samples"] == 4 * design
    full = {json.loads(line)["key"]: line for line in lines(full_run)}
    budgeted = lines(directory)
    assert_same_cells(budgeted, full)
    full_samples = [json.loads(line) for line in full.values()]
    for task in ("parity", "add_numbers"):
        for shots in (0, 2):
            of_group = [s for s in full_samples if s["task"] == task and s["shots"] == shots]
            templates, rows = {s["template"] for s in of_group}, {s["row_id"] for s in of_group}
            computed = {(s["template"], s["row_id"]) for s in map(json.loads, budgeted)
                        if s["task"] == task and s["shots"] == shots}
            assert (len(templates), len(rows)) == (TEMPLATES, ROWS)
            assert computed == set(design_cells(sorted(templates), sorted(rows), 0.25, 7))
    # The budget does not enter the spec: the budgeted run lives where the full run of the command does.
    assert json.loads((directory / "spec.json").read_text()) == json.loads((full_run / "spec.json").read_text())
    # Scores are means over the computed cells, n saying how many.
    assert {s.n for s in record.ungrouped()} <= {design // TEMPLATES, design // TEMPLATES + 1}


def test_a_larger_budget_then_none_computes_only_missing_cells_and_ends_as_the_full_run(plain_backend, full_run,
                                                                                        tmp_path, one_torch_thread):
    counting = Counting(plain_backend)
    run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.25"), reuse_complete=True)
    first = counting.answered
    _, again = run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.25"),
                   reuse_complete=True)
    assert counting.answered == first, "the same budget again computes nothing"
    _, larger = run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.5"),
                    reuse_complete=True)
    assert counting.answered == larger.counts["samples"] == 4 * budget_size(0.5, TEMPLATES * ROWS)
    assert larger.timings["resumed_samples"] == first
    _, smaller = run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.1"),
                     reuse_complete=True)
    assert counting.answered == larger.counts["samples"], "a smaller budget keeps every cell and computes none"
    assert smaller.counts["samples"] == larger.counts["samples"]
    directory, complete = run(CONFIG, counting, Registry(), tmp_path, run_id="r", reuse_complete=True)
    assert counting.answered == complete.counts["samples"] == 4 * TEMPLATES * ROWS
    assert complete.budget is None
    assert [json.loads(line)["key"] for line in lines(directory)] == [json.loads(line)["key"] for line in
                                                                      lines(full_run)]
    assert_same_cells(lines(directory), {json.loads(line)["key"]: line for line in lines(full_run)})
    assert without_timings(directory) == without_timings(full_run)


def test_with_batch_invariant_forwards_an_extended_budgeted_run_is_the_full_run_bit_for_bit(tiny_models, full_run,
                                                                                           tmp_path, one_torch_thread):
    from harness.engine import HFBackend

    backend = HFBackend(str(tiny_models["tiny-llama"]), dtype="float32", device="cpu", batch_invariant=True)
    full, _ = run(CONFIG, backend, Registry(), tmp_path / "full", run_id="r")
    for budget in (Budget.parse("0.25"), Budget.parse("0.5"), None):
        extended, record = run(CONFIG, backend, Registry(), tmp_path / "budgeted", run_id="r", budget=budget,
                               reuse_complete=True)
    assert record.budget is None and record.timings["resumed_samples"] == 4 * budget_size(0.5, TEMPLATES * ROWS)
    # Every line, log-likelihoods included, is byte for byte the full run's, and in its order.
    assert lines(extended) == lines(full)
    assert without_timings(extended) == without_timings(full)
    # The engine setting enters the spec: batched and batch-invariant runs never resume into each other.
    spec = json.loads((full / "spec.json").read_text())
    assert spec["model"]["engine"]["batch_invariant"] is True
    assert "batch_invariant" not in json.loads((full_run / "spec.json").read_text())["model"]["engine"]


def test_an_extension_killed_before_its_record_resumes_with_the_same_command(plain_backend, full_run, tmp_path,
                                                                           one_torch_thread):
    directory, record = run(CONFIG, plain_backend, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.25"))
    # What a kill between reopening and the new record leaves: the samples, no run.json.
    RunStore(directory, record.spec, extend=True).close()
    assert not (directory / "run.json").exists() and len(lines(directory)) == record.counts["samples"]
    with pytest.raises(HarnessError, match="no run.json; the run is incomplete"):
        load_run(directory)
    counting = Counting(plain_backend)
    run(CONFIG, counting, Registry(), tmp_path, run_id="r", budget=Budget.parse("0.25"))
    assert counting.answered == 0
    load_run(directory)


def test_a_full_run_is_not_redone_by_a_budget_and_without_reuse_is_refused(plain_backend, full_run,
                                                                           one_torch_thread):
    counting = Counting(plain_backend)
    _, record = run(CONFIG, counting, Registry(), full_run.parent, run_id="r", budget=Budget.parse("0.1"),
                    reuse_complete=True)
    assert counting.answered == 0 and record.budget is None
    with pytest.raises(HarnessError, match="holds a complete run"):
        run(CONFIG, counting, Registry(), full_run.parent, run_id="r", budget=Budget.parse("0.1"))


def test_the_budget_section_reads_back_and_a_damaged_count_is_refused(plain_backend, tmp_path, one_torch_thread):
    directory, record = run(CONFIG, plain_backend, Registry(), tmp_path, run_id="r", budget=Budget.parse("20"))
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert all(c.computed == c.design == 20 for c in record.budget.cells)
    raw = json.loads((directory / "run.json").read_text())
    raw["budget"]["cells"][1]["computed"] = 21
    (directory / "run.json").write_text(json.dumps(raw))
    with pytest.raises(HarnessError, match=r"budget.cells\[1\] \(parity, 2 shots\) says 21 of 72 cells"):
        load_run(directory)
    assert "budget" not in replace(record, budget=None).to_json(), "a run without --budget has no section"


def test_cli_refuses_a_bad_budget_in_one_line(capsys):
    assert main(["run", "--tasks", "parity", "--budget", "ten", "--backend", "scripted", "--model", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--budget 'ten'" in error


def test_compare_and_report_take_a_budgeted_run_and_say_so(plain_backend, full_run, tmp_path, capsys,
                                                           one_torch_thread):
    directory, record = run(CONFIG, plain_backend, Registry(), tmp_path / "runs", run_id="budgeted",
                            budget=Budget.parse("0.25"))
    capsys.readouterr()
    assert main(["compare", str(full_run), str(directory)]) == 0
    out = capsys.readouterr().out
    assert f"{record.counts['samples']} shared samples; only in A: {4 * TEMPLATES * ROWS - record.counts['samples']}" \
        in " ".join(out.split())
    assert "is budgeted (--budget 0.25): compared on the cells both runs computed" in " ".join(out.split())
    assert main(["report", str(full_run), str(directory), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"{record.counts['samples']} of {4 * TEMPLATES * ROWS} (--budget 0.25)" in markdown
    assert f"estimated from {record.budget.cells[0].computed} of {TEMPLATES * ROWS} cells" in markdown


def test_the_estimator_flag_reaches_the_printed_estimates_and_the_report(plain_backend, tmp_path, capsys,
                                                                        monkeypatch, one_torch_thread):
    import harness.analysis.budget as budget
    import harness.report.spread as spread

    directory, _ = run(RunConfig(tasks="parity", limit=12, seed=7), plain_backend, Registry(), tmp_path / "runs",
                       run_id="budgeted", budget=Budget.parse("0.5"))
    used, estimate = [], budget.estimate_budget
    for module in (budget, spread):  # the run's printout imports it when it prints; the report at its import
        monkeypatch.setattr(module, "estimate_budget",
                            lambda *a, **k: used.append(k["estimator"]) or estimate(*a, **k))
    command = ["run", "--backend", "scripted", "--model", "x", "--tasks", "parity", "--limit", "12", "--budget", "0.5",
               "--out", str(tmp_path / "scripted"), "--estimator", "choices"]
    assert main(command) == 0
    assert used == ["choices"] and "cells computed" in capsys.readouterr().out
    assert main(["report", str(directory), "--out", str(tmp_path / "report"), "--estimator", "bayes"]) == 0
    assert used[1:] == ["bayes"]
    with pytest.raises(SystemExit) as refused:  # argparse's refusal of a value outside the choices
        main(command[:-1] + ["mcmc"])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'mcmc'" in error and "plug-in" in error
