"""Reading and checking task and template files, field by field, with one-line errors.

Every check names the file and the field at fault and says what is allowed, so a typo never turns
into a silently different prompt. The registry and the task kinds both check their fields here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

from harness.errors import HarnessError
from harness.tasks.jinja_env import make_environment

# libyaml's loader when present: parsing every task and template at start-up is most of `harness
# run`'s time to its first request with the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path, loader: Any = _YAML_LOADER, what: str = "YAML") -> Any:
    """Parse a YAML file; a syntax error or an unreadable file is one line naming file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HarnessError(f"{path}{where}: invalid {what} ({problem}); fix the file syntax") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read ({exc.strerror})") from None


def read_mapping(path: Path) -> dict[str, Any]:
    loaded = load_yaml(path)
    if not isinstance(loaded, dict):
        raise HarnessError(f"{path}: expected a mapping of fields at the top level")
    return loaded


def check_keys(path: Path, raw: dict[str, Any], required: set[str], optional: set[str], what: str) -> None:
    unknown = sorted(set(raw) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise HarnessError(f"{path}: unknown {what} field {unknown[0]!r}; allowed: {allowed}")
    missing = sorted(required - set(raw))
    if missing:
        raise HarnessError(f"{path}: missing required {what} field {missing[0]!r}")


def expect(path: Path, field: str, value: Any, kind: type | tuple[type, ...], hint: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HarnessError(f"{path}: field {field!r} must be {hint}, got {value!r}")
    return value


_OTHER_FILE_TAGS = {jinja2.nodes.Include: "include", jinja2.nodes.Import: "import",
                    jinja2.nodes.FromImport: "from ... import", jinja2.nodes.Extends: "extends"}


def check_jinja(path: Path, field: str, source: str, expression: bool = False) -> None:
    """Refuse a Jinja syntax error, and tags that read other template files (a template is one field)."""
    env = make_environment()
    try:
        if expression:
            env.compile_expression(source)
            return
        parsed = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise HarnessError(f"{path}: field {field!r} has a Jinja syntax error: {exc.message}") from None
    for node_type, tag in _OTHER_FILE_TAGS.items():
        if any(True for _ in parsed.find_all(node_type)):
            raise HarnessError(f"{path}: field {field!r} uses {{% {tag} %}}, which reads another template file; "
                               "templates are self-contained: write the text (or a macro) inline")


def parse_options(path: Path, field: str, raw: Any) -> tuple[str, ...] | str:
    """Options are a list of Jinja strings, or one Jinja expression that evaluates to a list."""
    if isinstance(raw, str):
        check_jinja(path, field, raw, expression=True)
        return raw
    if isinstance(raw, list) and raw and all(isinstance(o, str) for o in raw):
        for i, option in enumerate(raw):
            check_jinja(path, f"{field}[{i}]", option)
        return tuple(raw)
    raise HarnessError(
        f"{path}: field {field!r} must be a non-empty list of strings or a Jinja expression string"
    )
