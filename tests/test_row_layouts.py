"""Task files' `layouts:`: one task reads its rows as the hub has them and as the original release has them.

`tests/data/layouts/<data>/<layout>/` holds the same few hand-made rows written in each layout a task
accepts (WSC's nested `target`, WiC's booleans and "true"/"false" strings, ANLI's `context` and
e/n/c labels, ARC's nested choices, Story Cloze's CSV columns, ...). Every task is planned from each
folder, zero- and one-shot, with every template: the prompts, options, answers and exemplars must be
the same whatever layout the rows came in. The layouts' checks at load time and their row-time
errors are one line naming the task file and the key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.chat import PLAIN
from harness.errors import HarnessError
from harness.eval.config import RunConfig
from harness.eval.plan import Planner, load_task_splits
from harness.tasks.registry import Registry, load_task
from harness.tasks.rows import DataOverrides, load_split
from tests.test_registry import TASK, make_task

LAYOUTS = Path(__file__).resolve().parent / "data" / "layouts"

# task -> (folder under tests/data/layouts, its layout folders (the hub's first), answer index of each eval row,
#          a column only the release rows have (None: the release's columns are the hub's))
CASES: dict[str, tuple[str, tuple[str, ...], list[int], str | None]] = {
    "boolq": ("boolq", ("hub", "release"), [1, 0, 1], None),
    "cb": ("cb", ("hub", "release"), [0, 2, 1], None),
    "copa": ("copa", ("hub", "release"), [0, 0, 1], None),
    "rte": ("rte", ("hub", "release"), [0, 1, 0], None),
    "wic": ("wic", ("hub", "release", "release_strings"), [0, 1, 0], None),
    "wsc": ("wsc", ("hub", "release"), [1, 0, 1], "target"),
    "winogrande": ("winogrande", ("hub", "release"), [1, 0, 0], "qID"),
    "anli_r1": ("anli", ("hub", "release"), [1, 0, 2], "context"),
    "anli_r2": ("anli", ("hub", "release"), [1, 0, 2], "context"),
    "anli_r3": ("anli", ("hub", "release"), [1, 0, 2], "context"),
    "hellaswag": ("hellaswag", ("hub", "release"), [0, 0, 2], None),
    "piqa": ("piqa", ("hub",), [0, 1, 0], None),
    "arc_easy": ("arc", ("hub", "release"), [1, 1, 2], None),
    "arc_challenge": ("arc", ("hub", "release"), [1, 1, 2], None),
    "story_cloze": ("story_cloze", ("hub", "release"), [0, 1, 1], "InputStoryid"),
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def planned(registry, task_name, folder):
    config = RunConfig(tasks=task_name, templates="all", shots=(0, 1), chat="off",
                       data_folders=((task_name, str(folder)),))
    task = registry.get(task_name)
    evaluation, pool = load_task_splits(task, config)
    samples = Planner(config, PLAIN).plan_task(task, evaluation, pool)
    rendered = {(s.template.id, s.shots, s.row_id): (s.prompt, s.row.options, s.row.answer_index, s.exemplar_ids)
                for s in samples}
    return task, evaluation, rendered


def test_every_task_with_real_rows_declares_its_layouts(registry):
    hub_tasks = {t.name for t in registry.tasks.values() if t.data.hub_path and t.kind == "choice"}
    assert hub_tasks == set(CASES)
    for name in CASES:
        assert registry.get(name).layouts, f"{name} declares no layouts"


@pytest.mark.parametrize("task_name", sorted(CASES))
def test_each_layout_renders_the_same_prompts_and_answers(registry, task_name):
    data, layouts, answers, release_column = CASES[task_name]
    task, hub_split, hub = planned(registry, task_name, LAYOUTS / data / layouts[0])
    assert len(hub) == len(task.templates) * 2 * 3
    assert [hub[(task.templates[0].id, 0, row_id)][2] for row_id in hub_split.ids] == answers
    for layout in layouts[1:]:
        _, split, rendered = planned(registry, task_name, LAYOUTS / data / layout)
        assert split.origin.startswith(f"local file {LAYOUTS / data / layout}")
        if release_column:
            assert release_column in split.columns, "the rows were read in the release layout"
        assert split.ids == hub_split.ids
        assert rendered == hub, f"{task_name}: {layout} rows render differently from the hub's"


def test_wsc_release_spans_are_flattened_and_fixed_as_wsc_fixed_does(registry):
    task = registry.get("wsc")
    rows = load_split(task, "validation", overrides=DataOverrides(folders=(("wsc", str(LAYOUTS / "wsc" / "release")),)))
    spans = [(r["span1_text"], r["span2_text"], r["span1_index"], r["span2_index"], r["label"]) for r in rows.rows]
    # "Anna." loses its period, "She" and "Bus"/"It" take the case of the text's word at their index.
    assert spans == [("trophy", "it", 1, 9, 1), ("Anna", "she", 0, 5, 0), ("bus", "it", 2, 13, 1)]
    assert rows.rows[0]["target"]["span1_text"] == "trophy", "the raw columns stay beside the mapped ones"


@pytest.mark.parametrize(("folder", "labels"), [("release", [False, True, False]),
                                                 ("release_strings", ["false", "true", "false"])])
def test_wic_release_labels_as_booleans_or_strings(registry, folder, labels):
    raw = [json.loads(line)["label"] for line in (LAYOUTS / "wic" / folder / "val.jsonl").read_text().splitlines()]
    assert raw == labels
    split = load_split(registry.get("wic"), "validation",
                       overrides=DataOverrides(folders=(("wic", str(LAYOUTS / "wic" / folder)),)))
    assert [r["label"] for r in split.rows] == [0, 1, 0]


def test_winogrande_answers_are_the_strings_1_and_2():
    for layout, name in (("hub", "validation"), ("release", "dev")):
        lines = (LAYOUTS / "winogrande" / layout / f"{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert [r["answer"] for r in rows] == ["2", "1", "1"]


def test_piqa_release_rows_without_labels_match_no_layout(registry):
    task = registry.get("piqa")
    with pytest.raises(HarnessError) as caught:
        load_split(task, "validation", overrides=DataOverrides(folders=(("piqa", str(LAYOUTS / "piqa" / "release")),)))
    message = str(caught.value)
    assert message.startswith(f"{task.path}: the rows of local file {LAYOUTS / 'piqa' / 'release' / 'valid.jsonl'}")
    assert "(columns: id, goal, sol1, sol2) match none of the task's layouts (hub: goal, sol1, sol2, label)" in message
    assert "'layouts:'" in message and "\n" not in message
    assert "labels apart" in task.description, "the task says why its release layout cannot be read"


# -- the task file's `layouts:`, checked when it loads -------------------------------------------

LAYOUT_TASK = TASK + """\
layouts:
  - name: plain
    columns: [text, label]
  - name: nested
    columns: [body, gold]
    fields: {text: body.text, label: "['no', 'yes'].index(gold)"}
"""


def write_rows(tmp_path, lines):
    (tmp_path / "tasks" / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_layouts_map_nested_fields_and_string_labels(tmp_path):
    task = load_task(make_task(tmp_path, LAYOUT_TASK))
    assert [layout.name for layout in task.layouts] == ["plain", "nested"]
    write_rows(tmp_path, [{"body": {"text": "sky is blue"}, "gold": "yes"}, {"body": {"text": "2+2=5"}, "gold": "no"}])
    split = load_split(task, "test")
    assert [(r["text"], r["label"]) for r in split.rows] == [("sky is blue", 1), ("2+2=5", 0)]
    assert set(split.columns) == {"body", "gold", "text", "label"}
    write_rows(tmp_path, [{"text": "a", "label": 1}])
    assert load_split(task, "test").rows == ({"text": "a", "label": 1},), "the first matching layout, unmapped"


def test_the_mapping_is_part_of_the_task_hash(tmp_path):
    first = load_task(make_task(tmp_path / "a", LAYOUT_TASK)).hash
    second = load_task(make_task(tmp_path / "b", LAYOUT_TASK.replace("['no', 'yes']", "['yes', 'no']"))).hash
    assert first != second and first == load_task(make_task(tmp_path / "c", LAYOUT_TASK)).hash


@pytest.mark.parametrize(("change", "expected"), [
    (("columns: [body, gold]", "colums: [body, gold]"),
     "unknown layouts[1] field 'colums'; allowed: columns, fields, name"),
    (("body.text", "body.text |"), "field 'layouts[1].fields.text' has a Jinja syntax error"),
    (("body.text", "title.text"), "field 'layouts[1].fields.text' reads column 'title', which 'layouts[1].columns' "
                                  "does not list"),
    (("name: nested", "name: plain"), "field 'layouts[1].name' is 'plain'; give each layout its own name"),
    (("columns: [body, gold]", "columns: []"), "field 'layouts[1].columns' must list the column names"),
    (("{text: body.text,", "{text: 3,"), "field 'layouts[1].fields.text' must be a Jinja expression string"),
    (("{text: body.text,", "{2text: body.text,"), "field 'layouts[1].fields.2text': a mapped field's name must be"),
])
def test_a_bad_layout_is_one_line_naming_the_task_file_and_key(tmp_path, change, expected):
    path = make_task(tmp_path, LAYOUT_TASK.replace(*change))
    with pytest.raises(HarnessError) as caught:
        load_task(path)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_layouts_must_be_a_non_empty_list(tmp_path):
    for value, expected in (("[]", "field 'layouts' is empty"), ("{name: x}", "field 'layouts' must be a list")):
        path = make_task(tmp_path, TASK + f"layouts: {value}\n")
        with pytest.raises(HarnessError, match=expected):
            load_task(path)


@pytest.mark.parametrize(("rows", "expected"), [
    ([{"body": {"text": "a"}, "gold": "maybe"}],
     "field 'layouts[1].fields.label' (nested layout) on row 0 of local files "),
    ([{"body": {"title": "a"}, "gold": "yes"}], "'body.text' reads something this row lacks"),
    ([{"other": 1}], "(columns: other) match none of the task's layouts (plain: text, label; nested: body, gold)"),
])
def test_rows_a_layout_cannot_map_are_one_line(tmp_path, rows, expected):
    task = load_task(make_task(tmp_path, LAYOUT_TASK))
    write_rows(tmp_path, rows)
    with pytest.raises(HarnessError) as caught:
        load_split(task, "test")
    assert str(caught.value).startswith(f"{task.path}: ") and expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_mapped_value_must_be_a_row_value(tmp_path):
    task = load_task(make_task(tmp_path, LAYOUT_TASK.replace("body.text", "body.words | map('upper')")))
    write_rows(tmp_path, [{"body": {"words": ["a"]}, "gold": "yes"}])
    with pytest.raises(HarnessError, match=r"gave generator .*end a map or select with '\| list'"):
        load_split(task, "test")


def test_a_round_split_is_found_under_its_base_name(registry):
    """A release's round folder (anli_v1.0/R2/) names its files dev and train, not dev_r2 and train_r2."""
    task = registry.get("anli_r2")
    folder = LAYOUTS / "anli" / "release"
    split = load_split(task, "dev_r2", overrides=DataOverrides(folders=(("anli_r2", str(folder)),)))
    assert split.origin == f"local file {LAYOUTS / 'anli' / 'release' / 'dev.jsonl'} split 'dev_r2'"
    assert [r["premise"][:10] for r in split.rows] == ["The Danube", "Marie Curi", "The Eiffel"]
    assert dataclasses.asdict(task.layouts[1])["fields"] == (("premise", "context"),
                                                              ("label", "['e', 'n', 'c'].index(label)"))
