"""The named registry of teachers and mergers (``teachers/registry.yaml``)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

REGISTRY_FILE = Path(str(files(__name__.rsplit(".", 1)[0]))) / "registry.yaml"


@cache
def builtin_registry() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(REGISTRY_FILE.read_text()) or {}


def registry(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The built-in entries, updated with a config's own ``registry:`` section."""
    merged = {name: dict(entry) for name, entry in builtin_registry().items()}
    for name, entry in (extra or {}).items():
        merged[name] = {**merged.get(name, {}), **entry}
    return merged


def lookup(name: str, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    entries = registry(extra)
    if name not in entries:
        raise KeyError(f"unknown teacher {name!r}; known: {', '.join(sorted(entries))}")
    return dict(entries[name])
