"""The programs' YAML configs (``build/``, ``train/``, ``eval/``, ``teachers/``, ``accelerate/``) and the
one way every program reads its own: a YAML file, then dotted ``key=value`` overrides, validated by
the program's pydantic model (``flows.config``, ``training.train_config``, ``evaluation.config``).

Override values are parsed as YAML: ``2e-6``, ``true``, ``[grpo]``, ``null``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file (empty without a path); anything else is a ValueError."""
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_value(value: Any) -> Any:
    """A command-line value as YAML reads it (``"2e-6"`` -> 2e-06, ``""`` -> None); others as given."""
    if not isinstance(value, str):
        return value
    return yaml.safe_load(value) if value.strip() else None


def parse_override(text: str) -> tuple[str, Any]:
    """``"grpo.rewards.length=0.5"`` -> ``("grpo.rewards.length", 0.5)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not KEY=VALUE")
    return key.strip(), parse_value(value)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "merger.temperature", 0.5)`` sets ``d["merger"]["temperature"]``, creating
    sections on the way."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key}: {part!r} is a value, not a section")
    node[leaf] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``data`` with every ``KEY=VALUE`` text applied in order."""
    for text in overrides:
        set_dotted(data, *parse_override(text))
    return data
