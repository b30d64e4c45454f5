"""The typed run record: every stored run folder loads, round-trips to the same JSON and bytes, and a
malformed record or sample is refused in one line naming the file and the field.

`make_score`, `make_record` and `make_sample` build small typed records for other tests' hand
computations (tests/test_analysis.py, tests/test_compare.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.eval.plan import sample_key
from harness.eval.record import (
    SCHEMA_VERSION,
    MetricScore,
    RunRecord,
    RunSpec,
    Sample,
    SampleId,
    ScoreEntry,
    ScoreGroup,
)
from harness.eval.store import RunStore, load_run
from harness.tasks.registry import Registry

RUNS = Path(__file__).parent / "data" / "runs"
RUN_FOLDERS = sorted(p.name for p in RUNS.iterdir() if p.is_dir())


def make_score(task: str, template: str, shots: int, metrics: dict[str, float], *, cluster: str = "c",
               template_hash: str = "", seen_status: str | None = None, group: dict[str, str] | None = None,
               ) -> ScoreEntry:
    return ScoreEntry(task=task, cluster=cluster, template=template, template_hash=template_hash, template_tags={},
                      shots=shots, n=1, metrics={name: MetricScore(mean, 0.0) for name, mean in metrics.items()},
                      seen_status=seen_status, group=ScoreGroup(**group) if group else None)


def make_record(scores: list[ScoreEntry], *, run_id: str = "run", model: dict[str, Any] | None = None) -> RunRecord:
    spec = RunSpec(harness_version="0", model=model or {}, config={}, tasks=[])
    return RunRecord(spec=spec, run_id=run_id, status="complete", seen_source="none", counts={"samples": 0},
                     scores=scores)


def make_sample(task: str, template: str, template_hash: str, shots: int, row_id: str,
                metrics: dict[str, float | list[float]], cluster: str = "c") -> Sample:
    return Sample(task=task, cluster=cluster, template=template, template_hash=template_hash, shots=shots,
                  row_id=row_id, exemplars=[], prompt="", metrics=metrics)


@pytest.mark.parametrize("name", RUN_FOLDERS)
def test_every_stored_run_loads_typed_and_writes_back_its_own_json_and_bytes(name):
    record, samples = load_run(RUNS / name)
    assert isinstance(record, RunRecord) and all(isinstance(s, ScoreEntry) for s in record.scores)
    assert samples and all(isinstance(s, Sample) for s in samples)
    assert record.schema_version == 0, "written before the record carried a schema_version"
    assert record.to_json() == json.loads((RUNS / name / "run.json").read_text(encoding="utf-8"))
    assert RunRecord.from_json(record.to_json()) == record
    lines = (RUNS / name / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [s.line() for s in samples] == lines
    assert [Sample.from_json(s.to_json()) for s in samples] == samples
    assert {s.key for s in samples} == {json.loads(line)["key"] for line in lines}


def test_old_scores_without_primary_metric_rank_by_their_first_metric():
    record, _ = load_run(RUNS / "base")
    assert all(s.primary_metric is None and s.primary == "acc" for s in record.scores)
    ranked = replace(record.scores[0], primary_metric="acc_norm")
    assert ranked.primary == "acc_norm"


def test_labels_grouping_and_shot_counts_read_off_the_scores():
    tuned, _ = load_run(RUNS / "tuned")
    base, _ = load_run(RUNS / "base")
    assert tuned.labelled and not base.labelled
    assert tuned.spec.declared_seen == {"tasks": ["t1"], "clusters": ["c1"]} and base.spec.declared_seen is None
    assert tuned.shot_counts == [0, 2] and tuned.spec.model_name == "models/tuned-llama"
    grouped = make_score("t", "a", 0, {"acc": 1.0}, group={"field": "category", "value": "x"})
    record = make_record([make_score("t", "a", 0, {"acc": 0.5}), grouped])
    assert record.ungrouped() == record.scores[:1]
    assert record.to_json()["scores"][1]["group"] == {"field": "category", "value": "x"}
    assert "group" not in record.to_json()["scores"][0] and "seen_status" not in record.to_json()["scores"][0]


def test_a_sample_has_one_identity_whose_key_is_the_planners():
    template = Registry().get("parity").templates[0]
    sample = make_sample("parity", template.id, template.hash, 2, "17", {"acc": 1.0})
    assert sample.id == SampleId("parity", template.id, template.hash, 2, "17")
    assert sample.key == sample.id.key == sample_key("parity", template, 2, "17")
    assert set(sample.to_json()) == {"key", "task", "cluster", "template", "template_hash", "shots", "row_id",
                                     "exemplars", "prompt", "metrics"}, "unset kind fields stay absent"


def test_a_record_written_now_carries_its_schema_version_and_reads_back(tmp_path):
    old, samples = load_run(RUNS / "tuned")
    record = replace(old, schema_version=SCHEMA_VERSION, run_id="fresh")
    store = RunStore(tmp_path / "fresh", record.spec)
    store.append(samples[:5])
    store.append(samples)  # the first five again are not written twice
    store.finalize(record, [s.key for s in samples])
    stored = json.loads((tmp_path / "fresh" / "run.json").read_text(encoding="utf-8"))
    assert stored["schema_version"] == SCHEMA_VERSION
    assert {k: v for k, v in stored.items() if k not in ("schema_version", "run_id")} == {
        k: v for k, v in old.to_json().items() if k != "run_id"}
    assert json.loads((tmp_path / "fresh" / "spec.json").read_text(encoding="utf-8")) == old.spec.to_json()
    assert (tmp_path / "fresh" / "samples.jsonl").read_bytes() == (RUNS / "tuned" / "samples.jsonl").read_bytes()
    assert load_run(tmp_path / "fresh") == (record, samples)


def test_a_resumed_store_reads_its_samples_back_typed(tmp_path):
    record, samples = load_run(RUNS / "base")
    RunStore(tmp_path / "r", record.spec).append(samples[:7])
    resumed = RunStore(tmp_path / "r", record.spec)
    assert list(resumed.samples.values()) == samples[:7]


def _edit_record(edit):
    def apply(folder: Path) -> str:
        path = folder / "run.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        edit(record)
        path.write_text(json.dumps(record), encoding="utf-8")
        return str(path)
    return apply


def _edit_sample(number: int, edit):
    def apply(folder: Path) -> str:
        path = folder / "samples.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        sample = json.loads(lines[number - 1])
        edit(sample)
        lines[number - 1] = json.dumps(sample)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return f"{path} line {number}"
    return apply


@pytest.mark.parametrize(("damage", "expected"), [
    (_edit_record(lambda r: r.pop("run_id")), "lacks field 'run_id'"),
    (_edit_record(lambda r: r.pop("tasks")), "lacks field 'tasks'"),
    (_edit_record(lambda r: r.update(scores={})), "has field 'scores' that is not a list of objects"),
    (_edit_record(lambda r: r["scores"][1].update(shots="2")), "has field 'scores[1].shots' that is not an integer"),
    (_edit_record(lambda r: r["scores"][0]["metrics"]["acc"].pop("mean")), "lacks field 'scores[0].metrics.acc.mean'"),
    (_edit_record(lambda r: r["scores"][2].update(seen_status="maybe")),
     "has field 'scores[2].seen_status' that is not one of seen, held_out_template"),
    (_edit_record(lambda r: r["scores"][0].update(group={"field": "category"})), "lacks field 'scores[0].group.value'"),
    (_edit_record(lambda r: r.update(surprise=1)), "has unknown field 'surprise'"),
    (_edit_record(lambda r: r.update(schema_version=SCHEMA_VERSION + 1)),
     f"has schema_version {SCHEMA_VERSION + 1}, and this harness reads versions 0 to {SCHEMA_VERSION}"),
    (_edit_sample(3, lambda s: s.pop("template_hash")), "lacks field 'template_hash'"),
    (_edit_sample(1, lambda s: s.update(metrics={"acc": "1"})),
     "has field 'metrics' that is not an object of numbers or lists of numbers"),
    (_edit_sample(2, lambda s: s.update(answer_index=None)), "has field 'answer_index' that is not an integer"),
    (_edit_sample(4, lambda s: s.update(row_id="r9")), "has field 'key' 't1|p|p000000000000001|0|r3', which is not"),
])
def test_a_malformed_record_or_sample_is_refused_in_one_line_naming_file_and_field(tmp_path, damage, expected):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("run.json", "samples.jsonl"):
        (folder / name).write_bytes((RUNS / "tuned" / name).read_bytes())
    where = damage(folder)
    with pytest.raises(HarnessError) as error:
        load_run(folder)
    message = str(error.value)
    assert message.startswith(f"{where} {expected}") and "\n" not in message, message
    assert message.endswith("rerun its command with --overwrite")


def test_a_record_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("[]", encoding="utf-8")
    (tmp_path / "samples.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(HarnessError, match=r"run.json is not a JSON object; rerun"):
        load_run(tmp_path)
