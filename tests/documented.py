"""The commands the README and docs/ show, as a reader would copy them, and a way to run one in this process.

``documented_commands()`` lists every command of the pages' shell code blocks (continuation lines
joined, comments and output blocks left out); ``run_documented(line, ...)`` runs a ``python -m MODULE``
(or console script) line through the module's ``main`` in the current folder and returns its exit status.
"""

from __future__ import annotations

import glob
import importlib
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)  # (language, body)
SHELL = ("", "bash", "sh", "shell")
SCRIPTS = {name: target.split(":")[0]
           for name, target in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].items()}


def command_lines(text: str) -> list[str]:
    """The commands of a page's shell code blocks: continuation lines joined, comments and blank lines
    left out (output blocks, ```text, and other languages are not commands)."""
    commands: list[str] = []
    for language, block in FENCE.findall(text):
        if language.strip() not in SHELL:
            continue
        current = ""
        for line in block.splitlines():
            stripped = line.strip()
            if not stripped or (stripped.startswith("#") and not current):
                continue
            current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
            if not stripped.endswith("\\"):
                commands.append(current)
                current = ""
    return commands


def documented_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every command on every page, in page order."""
    return [(str(page.relative_to(ROOT)), command) for page in PAGES for command in command_lines(page.read_text())]


def words(line: str, variables: Mapping[str, str] = {}) -> list[str]:
    """The line as a shell would split it: comment and a trailing ``&`` off, ``$VAR`` from ``variables``,
    ``[--optional flags]`` dropped, globs expanded in the current folder."""
    out: list[str] = []
    for word in shlex.split(re.sub(r"\s\[[^\]]*\]", "", line), comments=True):
        if word == "&":
            continue
        word = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], word)
        out.extend(sorted(glob.glob(word)) or [word] if any(c in word for c in "*?") else [word])
    return out


def module_and_args(line: str, variables: Mapping[str, str] = {}) -> tuple[str, list[str]]:
    """``("evaluation.evaluate", [args])`` for ``python -m evaluation.evaluate args`` (also
    ``.venv/bin/python -m``) or a console script (``build-avrt args``)."""
    argv = words(line, variables)
    if argv[0] in SCRIPTS:
        return SCRIPTS[argv[0]], argv[1:]
    if argv[0].endswith("python") and argv[1] == "-m":
        return argv[2], argv[3:]
    raise ValueError(f"not a project command: {line}")


def run_documented(line: str, variables: Mapping[str, str] = {}, extra: tuple[str, ...] = ()) -> int:
    """Run the line's module ``main`` here (in the current folder) with ``extra`` arguments appended;
    its exit status."""
    module, args = module_and_args(line, variables)
    try:
        return importlib.import_module(module).main([*args, *extra]) or 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
