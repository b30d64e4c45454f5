"""The format grammar of `harness templates vary`: which parts of a template's Jinja are form.

Scores move by tens of points across prompt formats that mean the same thing (Sclar et al. 2023,
FormatSpread), so held-out formats are generated from a small grammar rather than hand-written.
`parse_format` reads a template's Jinja source line by line, splitting only at newlines outside
Jinja tags, and recognises the few line shapes whose form can change without touching their
meaning. Everything else is free text, kept byte for byte. The axes:

- separator: a field line `Label: {{ expr }}...` (a label of one to three plain words) gets
  `": "`, `" - "`, `":\\n"`, `" = "` or `" :: "` between its label and its text;
- casing: field labels, header lines (`OPTIONS:`) and a last line such as `Letter:` are written
  as is, lower, UPPER or Title case (one-letter labels like `Q:` or `A:` are kept: text may name them);
- field_join: what stands between two adjacent field lines: `"\\n"`, `"\\n\\n"`, `" "` or `" || "`;
- enumerator: a loop that bullets its items (`{% for o in options %}- {{ o }}` ...) gets `-`, `*`,
  `A.`, `a)`, `(a)`, `1.`, `1)`, `[1]` or none; a labelled list (`1. {{ choice1 }}` / `2. ...`
  lines, or a loop printing `{{ label }}. `) keeps its labels and changes only their punctuation
  (`X.`, `X)`, `(X)`, `[X]`, `X:`). The labels are often the scored options ("1", "A") and the
  instruction may name them ("Answer with 1 or 2"), so keeping them keeps the verbaliser and the
  instruction true: a variant's options are always its source's;
- answer_prefix: a last line that is a generic answer cue (`Answer:`, `A:`, `Reply:`, `Response:`,
  `Output:`) becomes another of them;
- instructions: only where the template marks a slot, in `tags.extra.instruction_slots` (a list of
  `{text: <exact literal text of the prompt>, alternatives: [...]}`). Tags are not part of a
  template's hash, so marking a slot leaves the template's hash and rendering as they were.

Lines holding Jinja statements, comments or whitespace control are never rewritten, nor is a
template holding `{% raw %}`. With every axis at its first value (as written) `render_format`
gives back the source exactly, which the tests check for every built-in template.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

SEPARATORS = (": ", " - ", ":\n", " = ", " :: ")
CASINGS = ("as written", "lower", "upper", "title")
FIELD_JOINS = ("\n", "\n\n", " ", " || ")
ANSWER_PREFIXES = ("Answer:", "A:", "Reply:", "Response:", "Output:")
_LETTERS = '"ABCDEFGHIJKLMNOPQRSTUVWXYZ"[loop.index0]'
BULLETS = {
    "-": "- ", "*": "* ", "A.": "{{ " + _LETTERS + " }}. ", "a)": "{{ " + _LETTERS.lower() + " }}) ",
    "(a)": "({{ " + _LETTERS.lower() + " }}) ", "1.": "{{ loop.index }}. ", "1)": "{{ loop.index }}) ",
    "[1]": "[{{ loop.index }}] ", "none": "",
}
WRAPPERS = ("X.", "X)", "(X)", "[X]", "X:")
SLOTS_KEY = "instruction_slots"

_LABEL = r"[A-Za-z][A-Za-z0-9']*(?: [A-Za-z0-9']+){0,2}"
_FIELD = re.compile(rf"^(?P<indent> *)(?P<label>{_LABEL}): (?P<value>\S.*)$", re.DOTALL)
_LABEL_LINE = re.compile(rf"^(?P<pre>\{{%-?\s*endfor\s*-?%\}})?(?P<label>{_LABEL}):$")
_STATIC_ITEM = re.compile(r"^(?P<open>[(\[]?)(?P<label>[A-Za-z]|[0-9]{1,2})(?P<close>[.):\]]) (?P<rest>\S.*)$",
                          re.DOTALL)
_LOOP_HEAD = re.compile(r"^(?P<head>\{%-?\s*for\s+\w+\s+in\s+[^%]*?-?%\})(?P<body>.*)$", re.DOTALL)
_LOOP_END = re.compile(r"^\{%-?\s*endfor\s*-?%\}")
_BULLET_BODY = re.compile(r"^(?P<bullet>[-*]) (?P<rest>.*)$", re.DOTALL)
_LABEL_BODY = re.compile(r"^(?P<open>[(\[]?)(?P<label>\{\{[^{}]*\}\})(?P<close>[.):\]]) (?P<rest>.*)$", re.DOTALL)
_RAW = re.compile(r"\{%-?\s*raw\b")
# Blocks whose body is a value the template computes with (`{% set x %}...{% endset %}`, macros,
# calls): text there may be split or compared, so it is never rewritten.
_BLOCK_OPEN = re.compile(r"\{%-?\s*(?:set\s[^=%]*-?%\}|macro\b|call\b)")
_BLOCK_CLOSE = re.compile(r"\{%-?\s*end(?:set|macro|call)\b")
_GENERIC_ANSWERS = {"answer", "a", "reply", "response", "output"}
_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}"}
_PAIRS = {"": ".):", "(": ")", "[": "]"}


@dataclass
class Node:
    """One line of a template (several, for a run of free text): its kind and its parts."""

    kind: str  # text, field, label, answer, item, loop
    text: str
    parts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Slot:
    text: str
    alternatives: tuple[str, ...]


@dataclass(frozen=True)
class FormatStructure:
    """A parsed template: its lines, and each axis that applies with its values (as written first)."""

    nodes: tuple[Node, ...]
    axes: dict[str, tuple[Any, ...]]
    slots: tuple[Slot, ...] = ()

    @property
    def size(self) -> int:
        """How many forms the axes allow, the template as written included."""
        total = 1
        for values in self.axes.values():
            total *= len(values)
        return total

    def choices(self, index: int) -> dict[str, Any]:
        """The `index`-th combination of axis values (mixed radix; 0 is the template as written)."""
        chosen = {}
        for name, values in self.axes.items():
            index, digit = divmod(index, len(values))
            chosen[name] = values[digit]
        return chosen


def _top_level_lines(source: str) -> list[str] | None:
    """The source split at newlines outside Jinja tags (quoted strings in tags respected), or None
    when a tag never closes."""
    lines, start, i = [], 0, 0
    while i < len(source):
        opener = source[i:i + 2]
        if opener in _CLOSERS:
            j, closer = i + 2, _CLOSERS[opener]
            while j < len(source) and not source.startswith(closer, j):
                if opener != "{#" and source[j] in "'\"":
                    j = _string_end(source, j)
                j += 1
            if j >= len(source):
                return None
            i = j + 2
            continue
        if source[i] == "\n":
            lines.append(source[start:i])
            start = i + 1
        i += 1
    lines.append(source[start:])
    return lines


def _string_end(source: str, start: int) -> int:
    """The index of the quote closing the string literal opened at `start` (past the end if none)."""
    k = start + 1
    while k < len(source) and source[k] != source[start]:
        k += 2 if source[k] == "\\" else 1
    return k


def _plain(text: str) -> bool:
    """Text holding only literal characters and `{{ }}` outputs without whitespace control."""
    return not any(mark in text for mark in ("{%", "{#", "{{-", "-}}", "%}", "#}"))


def _static_runs(lines: list[str]) -> set[int]:
    """Indices of lines in runs of two or more labelled items: `1. x`, `2. y` or `(A) x`, `(B) y`."""
    found: set[int] = set()
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines):
            match = _STATIC_ITEM.match(lines[j])
            if not match or not _plain(match["rest"]) or match["close"] not in _PAIRS[match["open"]]:
                break
            if j > i:
                first = _STATIC_ITEM.match(lines[i])
                before = _STATIC_ITEM.match(lines[j - 1])
                if ((match["open"], match["close"]) != (first["open"], first["close"])
                        or not _follows(before["label"], match["label"])):
                    break
            elif match["label"] not in ("1", "A", "a"):
                break
            j += 1
        if j - i >= 2:
            found.update(range(i, j))
            i = j
        else:
            i += 1
    return found


def _follows(previous: str, label: str) -> bool:
    if previous.isdigit():
        return label.isdigit() and int(label) == int(previous) + 1
    return len(label) == 1 and ord(label) == ord(previous) + 1 and label.isalpha()


def _classify(lines: list[str]) -> list[Node]:
    nodes: list[Node] = []
    items = _static_runs(lines)
    depth = 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        inside, depth = depth > 0, depth + len(_BLOCK_OPEN.findall(line)) - len(_BLOCK_CLOSE.findall(line))
        loop = _LOOP_HEAD.match(line)
        label_line = _LABEL_LINE.match(line)
        field_line = _FIELD.match(line)
        if inside:
            _append_text(nodes, line)
        elif i in items:
            nodes.append(Node("item", line, _STATIC_ITEM.match(line).groupdict()))
        elif loop and i + 1 < len(lines) and _LOOP_END.match(lines[i + 1]) and _plain(loop["body"]):
            body = _BULLET_BODY.match(loop["body"]) or _LABEL_BODY.match(loop["body"])
            if body and ("bullet" in body.groupdict() or body["close"] in _PAIRS[body["open"]]):
                nodes.append(Node("loop", line, {"head": loop["head"], **body.groupdict()}))
            else:
                _append_text(nodes, line)
        elif label_line and (last or not label_line["pre"]):
            generic = last and label_line["label"].lower() in _GENERIC_ANSWERS
            nodes.append(Node("answer" if generic else "label", line,
                              {"pre": label_line["pre"] or "", "label": label_line["label"]}))
        elif field_line and "{{" in field_line["value"] and _plain(field_line["value"]):
            nodes.append(Node("field", line, field_line.groupdict()))
        else:
            _append_text(nodes, line)
    return nodes


def _append_text(nodes: list[Node], line: str) -> None:
    """Free text; a run of free lines is one node, so a marked instruction may span lines."""
    if nodes and nodes[-1].kind == "text":
        nodes[-1].text += "\n" + line
    else:
        nodes.append(Node("text", line))


def _slots(where: str, source: str, nodes: list[Node], raw: Any) -> tuple[Slot, ...]:
    """The template's marked instruction slots, each found exactly once, in free text."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise HarnessError(f"{where}: tags.extra.{SLOTS_KEY} must be a list of {{text, alternatives}} mappings")
    slots = []
    for n, entry in enumerate(raw):
        name = f"tags.extra.{SLOTS_KEY}[{n}]"
        alternatives = entry.get("alternatives") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or set(entry) != {"text", "alternatives"} or not isinstance(entry["text"], str)
                or not entry["text"] or not isinstance(alternatives, list) or not alternatives
                or not all(isinstance(a, str) and a for a in alternatives)):
            raise HarnessError(f"{where}: {name} must be {{text: STRING, alternatives: [STRING, ...]}}")
        if source.count(entry["text"]) != 1 or sum(node.text.count(entry["text"]) for node in nodes
                                                   if node.kind == "text") != 1:
            raise HarnessError(f"{where}: {name}.text must occur exactly once in the prompt, in plain text "
                               "outside field, option and answer lines; copy it from the prompt")
        slots.append(Slot(entry["text"], tuple(dict.fromkeys(a for a in alternatives if a != entry["text"]))))
    return tuple(slots)


def _first(original: Any, values: tuple[Any, ...]) -> tuple[Any, ...]:
    return (original, *(v for v in values if v != original))


def parse_format(where: str, source: str, slots: Any = None) -> FormatStructure:
    """A template's lines and the axes its form can vary along (none, for a shape not recognised)."""
    lines = None if _RAW.search(source) else _top_level_lines(source)
    if lines is None:
        return FormatStructure((Node("text", source),), {})
    nodes = _classify(lines)
    axes: dict[str, tuple[Any, ...]] = {}
    fields = [node for node in nodes if node.kind == "field"]
    if fields:
        axes["separator"] = SEPARATORS
    if any(len(node.parts["label"]) > 1 for node in nodes if node.kind in ("field", "label")):
        axes["casing"] = CASINGS
    if any(a.kind == b.kind == "field" for a, b in itertools.pairwise(nodes)):
        axes["field_join"] = FIELD_JOINS
    bullets = [node for node in nodes if node.kind == "loop" and "bullet" in node.parts]
    labelled = [node for node in nodes if node.kind == "item" or node.kind == "loop" and "bullet" not in node.parts]
    if bullets and not labelled and len({node.parts["bullet"] for node in bullets}) == 1:
        axes["enumerator"] = _first(bullets[0].parts["bullet"], tuple(BULLETS))
    if labelled and not bullets:
        wrappers = {node.parts["open"] + "X" + node.parts["close"] for node in labelled}
        if len(wrappers) == 1:
            axes["enumerator"] = _first(wrappers.pop(), WRAPPERS)
    if nodes[-1].kind == "answer":
        axes["answer_prefix"] = _first(nodes[-1].parts["label"] + ":", ANSWER_PREFIXES)
    marked = _slots(where, source, nodes, slots)
    for n, slot in enumerate(marked, start=1):
        axes[f"instruction_{n}"] = tuple(range(len(slot.alternatives) + 1))
    return FormatStructure(tuple(nodes), axes, marked)


def _case(label: str, casing: str) -> str:
    if len(label) < 2 or casing == "as written":
        return label
    if casing == "title":  # str.title would give "Speaker'S"
        return " ".join(word[:1].upper() + word[1:].lower() for word in label.split(" "))
    return label.lower() if casing == "lower" else label.upper()


def _enumerated(node: Node, style: str) -> str:
    parts = node.parts
    if "bullet" in parts:
        return parts["head"] + BULLETS[style] + parts["rest"]
    opening, _, closing = style.partition("X")
    text = opening + parts["label"] + closing + " " + parts["rest"]
    return parts["head"] + text if node.kind == "loop" else text


def render_format(structure: FormatStructure, choices: dict[str, Any]) -> str:
    """The template source in the form `choices` names (axes left out stay as written)."""
    casing = choices.get("casing", "as written")
    out: list[str] = []
    previous: Node | None = None
    for node in structure.nodes:
        if previous is not None:
            both_fields = previous.kind == node.kind == "field"
            out.append(choices.get("field_join", "\n") if both_fields else "\n")
        parts = node.parts
        if node.kind == "field":
            separator = choices.get("separator", ": ")
            out.append(parts["indent"] + _case(parts["label"], casing) + separator + parts["value"])
        elif node.kind == "label":
            out.append(parts["pre"] + _case(parts["label"], casing) + ":")
        elif node.kind == "answer":
            out.append(parts["pre"] + choices.get("answer_prefix", parts["label"] + ":"))
        elif node.kind in ("item", "loop") and "enumerator" in choices:
            out.append(_enumerated(node, choices["enumerator"]))
        elif node.kind == "text":
            text = node.text
            for n, slot in enumerate(structure.slots, start=1):
                pick = choices.get(f"instruction_{n}", 0)
                if pick:
                    text = text.replace(slot.text, slot.alternatives[pick - 1])
            out.append(text)
        else:
            out.append(node.text)
        previous = node
    return "".join(out)
