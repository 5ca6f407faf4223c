"""Every command answers --help."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = sorted({target.split(":")[0] for target in SCRIPTS.values()} | {
    "flows.serve", "flows.view", "training.tiny_models", "media.synthetic", "demo.task", "demo.models",
    "demo.student", "demo.summary", "bench.pipeline", "bench.demo_student"})


def _help(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("module", MODULES)
def test_every_command_answers_help(module):
    result = _help(module)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
