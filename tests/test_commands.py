"""Every command answers --help, and the module paths that moved still run (with a notice)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = sorted({target.split(":")[0] for target in SCRIPTS.values()} | {
    "flows.serve", "flows.view", "training.tiny_models", "training.demo_models", "media.synthetic",
    "evaluation.demo_summary", "bench.pipeline", "bench.demo_student"})
MOVED = {"training.evaluate": "evaluation.evaluate", "training.export_student": "evaluation.export_student",
         "teachers.serve": "serving.launch", "teachers.prepare_af3_think": "serving.prepare_af3_think"}


def _help(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("module", MODULES)
def test_every_command_answers_help(module):
    result = _help(module)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_moved_commands_still_run(old, new):
    result = _help(old)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"python -m {old} is now python -m {new}" in result.stderr and "usage:" in result.stdout
