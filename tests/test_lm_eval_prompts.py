"""The `lm_eval_copa` template words COPA exactly as lm-eval's own `copa` task does, so the two scores
are comparable (README: "Benchmark a real checkpoint")."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.tasks.prompts import PromptRenderer
from harness.tasks.registry import Registry
from tests.conftest import SHARED_DATA


def _lm_eval_copa_utils():
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "super_glue" / "copa" / "utils.py"
    spec = importlib.util.spec_from_file_location("lm_eval_copa_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (SHARED_DATA / "superglue" / "copa").is_dir(), reason="../shared/data/superglue is absent")
def test_lm_eval_copa_template_renders_lm_evals_prompt_choices_and_answer():
    utils = _lm_eval_copa_utils()
    task = Registry().tasks["copa"]
    template = task.template("lm_eval_copa")
    renderer = PromptRenderer()
    rows = [json.loads(line) for line in (SHARED_DATA / "superglue" / "copa" / "val.jsonl").read_text().splitlines()]
    assert len(rows) == 100
    for row in rows:
        rendered = renderer.render_row(task, template, row, str(row["idx"]))
        # lm-eval joins context and choice with its target delimiter " ", and its choices start with a
        # space of their own: the continuation is "  choice", the template's delimiter and option.
        assert rendered.prompt == utils.doc_to_text(row)
        assert [template.target_delimiter + o for o in rendered.options] == [" " + c for c in utils.doc_to_choice(row)]
        assert rendered.options[rendered.answer_index] == utils.doc_to_target(row)[1:]
