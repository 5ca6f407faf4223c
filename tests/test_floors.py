"""The floors of the house (pyproject's ``[tool.importlinter]``, run by ``make lint``): the tree keeps
them, and an import that runs up a floor, or closes a circle, breaks the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The root packages and pyproject.toml, copied (the checks run on the copy's modules)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_its_floors():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_from_training_into_evaluation_breaks_the_build(tree_copy):
    add_import(tree_copy, "training.rewards", "import evaluation.scoring  # noqa: E402")
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert "floors: no import runs up BROKEN" in result.stdout
    assert "training.rewards -> evaluation.scoring" in result.stdout


def test_two_modules_that_import_each_other_break_the_build(tree_copy):
    add_import(tree_copy, "training.weight_sync", "import training.rollout  # noqa: E402")
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert "no circles: no modules import each other BROKEN" in result.stdout
    assert ".weight_sync -> .rollout" in result.stdout
