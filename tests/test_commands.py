"""Every command answers --help."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
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


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """Every module's ``--help``, a few processes at a time (each is mostly start-up and imports)."""
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(MODULES, pool.map(_help, MODULES)))


@pytest.mark.parametrize("module", MODULES)
def test_every_command_answers_help(module, helps):
    result = helps[module]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
