"""Row layouts: the task file's declarative mapping from the rows as distributed to the rows it reads.

One dataset reaches users in several layouts: the hub's parquet copy, the original release's JSON
lines (SuperGLUE's WSC nests its spans under `target`, its WiC labels are booleans or "true" and
"false"), a CSV with other column names. A task file's `layouts:` lists the layouts it accepts:

    layouts:
      - name: hub
        columns: [text, span1_text, span2_text, label]
      - name: release
        columns: [text, target, label]
        fields: {span1_text: target.span1_text, span2_text: target.span2_text, label: "label | int"}

A split's rows take the first layout whose `columns` are all among the rows' columns; every field
of its `fields` is a Jinja expression over the raw row (all of them read the row as loaded, never
each other's results) and sets that field of every row. This runs right after the rows are loaded,
whatever their source, so templates, answers, ids and few-shot pools see one layout. The mapping is
part of the task file, so it is part of the task's hash: it changes what is scored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from harness.errors import HarnessError
from harness.tasks.fields import check_jinja, check_keys, expect
from harness.tasks.jinja_env import make_environment
from harness.tasks.schema import Layout, Task

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
# What a mapped value may be: what a row read by `datasets` holds, so samples store it as JSON.
_ROW_VALUES = (str, int, float, bool, type(None), list, dict)


def parse_layouts(path: Path, raw: Any) -> tuple[Layout, ...]:
    """The task file's `layouts:`, checked: names, identifying columns, and fields that compile and read
    only the columns their layout lists (so a layout says exactly which rows it can map)."""
    entries = expect(path, "layouts", raw, list, "a list of layouts (name, columns, fields)")
    if not entries:
        raise HarnessError(f"{path}: field 'layouts' is empty; list at least one layout or drop the field")
    env = make_environment()
    layouts: list[Layout] = []
    for i, entry in enumerate(entries):
        key = f"layouts[{i}]"
        entry = expect(path, key, entry, dict, "a mapping with name, columns and optional fields")
        check_keys(path, entry, {"name", "columns"}, {"fields"}, key)
        name = expect(path, f"{key}.name", entry["name"], str, "a layout name")
        if not _NAME.match(name) or name in {layout.name for layout in layouts}:
            raise HarnessError(f"{path}: field '{key}.name' is {name!r}; give each layout its own name "
                               "matching [a-z0-9_-]+")
        columns = expect(path, f"{key}.columns", entry["columns"], list, "a list of column names")
        if not columns or not all(isinstance(c, str) and c for c in columns) or len(set(columns)) != len(columns):
            raise HarnessError(f"{path}: field '{key}.columns' must list the column names that identify "
                               f"this layout's rows, each once, got {columns!r}")
        fields = expect(path, f"{key}.fields", entry.get("fields", {}), dict,
                        "a mapping of field name -> Jinja expression over the raw row")
        for field, source in fields.items():
            where = f"{key}.fields.{field}"
            if not isinstance(field, str) or not field.isidentifier():
                raise HarnessError(f"{path}: field {where!r}: a mapped field's name must be an identifier "
                                   "templates can name (letters, digits, _)")
            expect(path, where, source, str, "a Jinja expression string over the raw row")
            check_jinja(path, where, source, expression=True)
            unlisted = sorted(meta.find_undeclared_variables(env.parse("{{ " + source + " }}"))
                              - set(env.globals) - set(columns))
            if unlisted:
                raise HarnessError(f"{path}: field {where!r} reads column {unlisted[0]!r}, which '{key}.columns' "
                                   "does not list; list it there (a layout's columns identify its rows)")
        layouts.append(Layout(name, tuple(columns), tuple(fields.items())))
    return tuple(layouts)


def _is_row_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_row_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_row_value(v) for k, v in value.items())
    return isinstance(value, _ROW_VALUES) and not isinstance(value, jinja2.Undefined)


def describe(layouts: Sequence[Layout]) -> str:
    return "; ".join(f"{layout.name}: {', '.join(layout.columns)}" for layout in layouts)


def select_layout(task: Task, columns: Sequence[str], origin: str) -> Layout | None:
    """The first of the task's layouts whose columns the rows all have (None: the task declares none)."""
    if not task.layouts:
        return None
    present = set(columns)
    for layout in task.layouts:
        if present.issuperset(layout.columns):
            return layout
    raise HarnessError(
        f"{task.path}: the rows of {origin} (columns: {', '.join(columns)}) match none of the task's "
        f"layouts ({describe(task.layouts)}); add a layout mapping these columns under 'layouts:' "
        "in the task file, or point the task at rows in one of those layouts"
    )


def apply_layout(task: Task, rows: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """The rows mapped by the layout they are in (see the module docstring); unchanged without layouts."""
    columns = tuple(dict.fromkeys(k for r in rows for k in r))
    layout = select_layout(task, columns, origin)
    if layout is None or not layout.fields:
        return rows
    index = task.layouts.index(layout)
    env = make_environment()
    compiled = [(field, source, env.compile_expression(source, undefined_to_none=False))
                for field, source in layout.fields]
    mapped = []
    for number, row in enumerate(rows):
        values = {}
        for field, source, expression in compiled:
            where = (f"{task.path}: field 'layouts[{index}].fields.{field}' ({layout.name} layout) on row {number} "
                     f"of {origin}")
            try:
                value = expression(**row)
            except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
                    RecursionError) as exc:
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise HarnessError(f"{where}: {source!r} failed ({type(exc).__name__}: {detail}); "
                                   "fix the expression in the task file or the row") from None
            if isinstance(value, jinja2.Undefined):
                raise HarnessError(f"{where}: {source!r} reads something this row lacks; fix the expression in "
                                   "the task file or the row")
            if not _is_row_value(value):
                raise HarnessError(f"{where}: {source!r} gave {type(value).__name__} {value!r:.80}, not a row "
                                   "value (text, number, boolean, list, mapping); end a map or select with '| list'")
            values[field] = value
        mapped.append({**row, **values})
    return mapped
