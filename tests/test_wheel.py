"""The wheel carries the built-in tasks and templates, and an installed wheel finds them.

The top-level `tasks/` and `templates/` folders become the package data `harness/builtin_tasks/`
and `harness/builtin_templates/` (pyproject.toml maps the packages to the folders); the test builds
the wheel offline, installs it into a bare folder and loads the registry from there, with neither
the source checkout nor the editable install on the path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from harness.files import BUILTIN_TASKS, BUILTIN_TEMPLATES
from harness.tasks.registry import Registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What the build reads; copied so the build writes its `build/` and egg-info outside the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "harness", "tasks", "templates")
INSTALLED_PREFIX = {"tasks": "harness/builtin_tasks", "templates": "harness/builtin_templates"}


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", *args, "--no-index", "--no-cache-dir", "--disable-pip-version-check"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _fingerprint(registry: Registry) -> dict[str, dict]:
    """Per task: its file's hash and its templates (id and rendering hash)."""
    return {
        name: {"hash": task.hash, "templates": sorted([t.id, t.hash] for t in task.templates)}
        for name, task in sorted(registry.tasks.items())
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment: the wheel cannot be built offline")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        origin = PROJECT_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), ".", cwd=source)
    if built.returncode != 0 and "BackendUnavailable" in built.stdout + built.stderr:
        pytest.skip(f"the build backend is unavailable offline: {built.stderr.strip()[-300:]}")
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout[-2000:]}\n{built.stderr[-3000:]}"
    wheels = sorted(dist.glob("harness-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {[w.name for w in wheels]}"
    return wheels[0]


def test_pyproject_lists_every_package():
    """`packages` is an explicit list (two packages live outside harness/): a new sub-package must join it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(PROJECT_ROOT).parts)
        for path in (PROJECT_ROOT / "harness").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    missing = sorted(on_disk - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}: the wheel would leave them out"
    assert config["package-dir"] == {"harness.builtin_tasks": "tasks", "harness.builtin_templates": "templates"}


def test_checkout_uses_top_level_folders():
    assert BUILTIN_TASKS == PROJECT_ROOT / "tasks"
    assert BUILTIN_TEMPLATES == PROJECT_ROOT / "templates"


def test_wheel_holds_tasks_templates_and_modules(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = set()
    for folder, prefix in INSTALLED_PREFIX.items():
        files = sorted((PROJECT_ROOT / folder).rglob("*.yaml"))
        assert files, f"no {folder}/**/*.yaml in the checkout"
        expected |= {f"{prefix}/{path.relative_to(PROJECT_ROOT / folder).as_posix()}" for path in files}
    package = PROJECT_ROOT / "harness"
    for path in [*package.rglob("*.py"), *(package / "data_files").rglob("*")]:
        if path.is_file() and "__pycache__" not in path.parts:
            expected.add(path.relative_to(PROJECT_ROOT).as_posix())
    missing = sorted(expected - names)
    assert not missing, f"{wheel.name} lacks {len(missing)} files, e.g. {missing[:10]}"
    assert not any(name.startswith(("tasks/", "templates/")) for name in names), "top-level folders in the wheel"


_CHILD = """
import json, sys
import harness
from harness import files
from harness.tasks.registry import Registry
registry = Registry()
json.dump({
    "harness": harness.__file__,
    "tasks": str(files.BUILTIN_TASKS),
    "templates": str(files.BUILTIN_TEMPLATES),
    "registry": {
        name: {"hash": task.hash, "templates": sorted([t.id, t.hash] for t in task.templates)}
        for name, task in sorted(registry.tasks.items())
    },
}, sys.stdout)
"""


def test_installed_wheel_finds_builtin_tasks(wheel: Path, tmp_path: Path):
    target = tmp_path / "installed"
    installed = _pip("install", "--no-deps", "--target", str(target), str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, f"pip install failed:\n{installed.stdout[-2000:]}\n{installed.stderr[-3000:]}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: no site processing, so the editable install's .pth finder never runs; the dependencies come
    # from the venv's site-packages, placed after the wheel's folder on PYTHONPATH.
    dependencies = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *dependencies])
    env["PYTHONNOUSERSITE"] = "1"
    child = subprocess.run([sys.executable, "-S", "-c", _CHILD], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, f"loading the registry from the wheel failed:\n{child.stderr[-3000:]}"
    found = json.loads(child.stdout)
    for key in ("harness", "tasks", "templates"):
        assert Path(found[key]).resolve().is_relative_to(target.resolve()), f"{key} came from {found[key]}"
    assert Path(found["tasks"]).name == "builtin_tasks" and Path(found["templates"]).name == "builtin_templates"
    checkout = _fingerprint(Registry())
    assert sorted(found["registry"]) == sorted(checkout), "the installed wheel finds other task names"
    counts = {name: len(entry["templates"]) for name, entry in found["registry"].items()}
    assert counts == {name: len(entry["templates"]) for name, entry in checkout.items()}
    assert found["registry"] == checkout
