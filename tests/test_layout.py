"""The package's layering, read from the source with `ast`: no import cycles, the import rules of
ARCHITECTURE.md, modules of at most 400 lines, and no `print` in library code.

Every import counts, wherever it stands: at module level, inside a function, or under
`if TYPE_CHECKING:`. `import a.b.c` and `from a.b import c` depend on the module `a.b.c` when it is
one, else on `a.b`; importing a module also runs its packages' `__init__`, a relation not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "harness"
MAX_LINES = 400
# Modules allowed over MAX_LINES for now, each with the reason: {"harness.x.y": "being split into ..."}.
LINE_LIMIT_EXCEPTIONS: dict[str, str] = {}

LOW_LEVEL = ("harness.tasks", "harness.engine", "harness.seen", "harness.metrics", "harness.chat", "harness.files",
             "harness.plugins", "harness.errors")
UPPER_LEVEL = ("harness.eval", "harness.tune", "harness.analysis", "harness.report")
CLI = ("harness.cli", "harness.commands")
CLI_IMPORTERS = ("harness.cli", "harness.commands", "harness.__main__")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module it depends on
    line: int
    text: str  # the statement, as written

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}: {self.text}) -> {self.target}"


def within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def find_modules(root: Path) -> dict[str, Path]:
    """{dotted name: file} for every module of the package at `root` (a package's name is its `__init__`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` is, or the nearest enclosing one (`pkg.mod.attr` -> `pkg.mod`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of a module of `modules` by a module of `modules`, at any nesting level."""
    found: dict[tuple[str, str, int], Import] = {}
    for module, path in modules.items():
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(source, filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    if node.level > len(package):
                        raise AssertionError(f"{path}:{node.lineno}: relative import above the package")
                    base_parts = package[: len(package) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]
            for name in targets:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    text = ast.get_source_segment(source, node) or ""
                    found.setdefault((module, target, node.lineno),
                                     Import(module, target, node.lineno, " ".join(text.split())))
    return list(found.values())


def import_cycles(modules: Iterable[str], imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for edge in imports:
        graph[edge.module].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


def rule_violations(imports: list[Import]) -> list[str]:
    rules = [
        (LOW_LEVEL, UPPER_LEVEL, "the low level imports no eval/tune/analysis/report"),
        (("harness.eval",), ("harness.tune",), "eval never imports tune"),
        (("harness.analysis",), ("harness.report",), "analysis never imports report"),
        (("harness.benchmarks",), UPPER_LEVEL, "benchmarks import no eval/tune/analysis/report"),
    ]
    broken = []
    for edge in imports:
        for sources, forbidden, rule in rules:
            if within(edge.module, sources) and within(edge.target, forbidden):
                broken.append(f"{edge}  [{rule}]")
        if within(edge.target, CLI) and edge.module not in CLI_IMPORTERS:
            broken.append(f"{edge}  [nothing below the CLI imports harness.cli or harness.commands]")
    return broken


def prints(modules: dict[str, Path]) -> list[str]:
    found = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load):
                found.append(f"{module} (line {node.lineno})")
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = find_modules(PACKAGE_ROOT)
    assert "harness.tasks.registry" in found and "harness.cli" in found
    return found


@pytest.fixture(scope="module")
def imports(modules: dict[str, Path]) -> list[Import]:
    return find_imports(modules)


def test_no_import_cycles(modules: dict[str, Path], imports: list[Import]):
    cycles = import_cycles(modules, imports)
    lines = []
    for component in cycles:
        members = set(component)
        edges = [str(edge) for edge in imports if edge.module in members and edge.target in members]
        lines.append(f"cycle between {', '.join(component)}:\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n  " + "\n  ".join(lines)


def test_import_rules(imports: list[Import]):
    broken = rule_violations(imports)
    assert not broken, "imports that break the layering rules:\n  " + "\n  ".join(broken)


def test_modules_at_most_400_lines(modules: dict[str, Path]):
    long = {}
    for module, path in modules.items():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES and module not in LINE_LIMIT_EXCEPTIONS:
            long[module] = count
    listed = ", ".join(f"{m} ({n} lines)" for m, n in sorted(long.items()))
    assert not long, f"modules over {MAX_LINES} lines: {listed}"
    stale = [m for m in LINE_LIMIT_EXCEPTIONS if m not in modules or
             len(modules[m].read_text(encoding="utf-8").splitlines()) <= MAX_LINES]
    assert not stale, f"LINE_LIMIT_EXCEPTIONS lists modules that no longer need it: {stale}"


def test_library_code_does_not_print(modules: dict[str, Path]):
    found = prints(modules)
    assert not found, "library code calls print (log, return values, or the CLI's rich console): " + ", ".join(found)


def test_scanner_sees_every_kind_of_import(tmp_path: Path):
    """The scanner on a small package: relative, nested and TYPE_CHECKING imports, a cycle, a broken rule."""
    package = tmp_path / "harness"
    (package / "tasks").mkdir(parents=True)
    (package / "eval").mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks" / "__init__.py").write_text("from . import registry\n")
    (package / "tasks" / "schema.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .registry import Registry\n"
    )
    (package / "tasks" / "registry.py").write_text(
        "from harness.tasks.schema import Task\n\ndef run():\n    from ..eval import plan\n"
    )
    (package / "eval" / "__init__.py").write_text("")
    (package / "eval" / "plan.py").write_text("import harness.tasks.registry\nprint('x')\n")
    found = find_modules(package)
    assert set(found) == {"harness", "harness.tasks", "harness.tasks.schema", "harness.tasks.registry",
                          "harness.eval", "harness.eval.plan"}
    edges = {(e.module, e.target) for e in find_imports(found)}
    assert edges == {
        ("harness.tasks", "harness.tasks.registry"),
        ("harness.tasks.schema", "harness.tasks.registry"),
        ("harness.tasks.registry", "harness.tasks.schema"),
        ("harness.tasks.registry", "harness.eval.plan"),
        ("harness.eval.plan", "harness.tasks.registry"),
    }
    assert import_cycles(found, find_imports(found)) == [
        ["harness.eval.plan", "harness.tasks.registry", "harness.tasks.schema"]
    ]
    broken = rule_violations(find_imports(found))
    assert len(broken) == 1 and broken[0].startswith("harness.tasks.registry (line 4: from ..eval import plan)")
    assert prints(found) == ["harness.eval.plan (line 2)"]
