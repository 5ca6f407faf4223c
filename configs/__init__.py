"""The programs' YAML configs (``build/``, ``train/``, ``eval/``, ``teachers/``, ``accelerate/``) and the
one way every program reads its own: a YAML file, then dotted ``key=value`` overrides, validated by
the program's pydantic model (``flows.config``, ``training.train_config``, ``evaluation.config``).

Override values are parsed as YAML: ``2e-6``, ``true``, ``[grpo]``, ``null``. A config may start from
another: ``base: omni-r1.yaml`` (relative to the file) takes that file's values, and this file's own
override them key by key (nested mappings merged, anything else replaced).

Also the one way the programs report what a user can fix (a config, an override, a path, a model, a
setting this machine cannot run): a :class:`UserError`, or a config that does not validate
(:func:`config_error`), becomes one line on stderr and exit status 2 (:func:`user_errors`).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).parent / "recipes"  # the trainer's recipes, one YAML each (docs/recipes.md)
EXIT_USER_ERROR = 2  # argparse's status for a bad command line, and build-avrt's for a refused run


class UserError(ValueError):
    """A mistake in the command that the user can fix; the message names what to change."""


def merged(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``base``: nested mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in own.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path | None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML file (empty without a path), over its ``base:`` file's if it names one; a missing
    file, one that is not a YAML mapping, or a loop of bases is a ``UserError``."""
    if path is None:
        return {}
    data = _read_mapping(path)
    if "base" not in data:
        return data
    base = Path(path).parent / str(data.pop("base"))
    if base.resolve() in _seen or base.resolve() == Path(path).resolve():
        raise UserError(f"--config {path}: its bases loop back to {base}")
    return merged(read_yaml(base, (*_seen, Path(path).resolve())), data)


def _read_mapping(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: not YAML ({err})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_value(value: Any) -> Any:
    """A command-line value as YAML reads it (``"2e-6"`` -> 2e-06, ``""`` -> None); others as given."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise UserError(f"{value!r} is not a value YAML can read (quote it, or close its brackets)") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"grpo.rewards.length=0.5"`` -> ``("grpo.rewards.length", 0.5)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} is not KEY=VALUE")
    try:
        return key.strip(), parse_value(value)
    except UserError as err:
        raise UserError(f"{key.strip()}: {err}") from None


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "merger.temperature", 0.5)`` sets ``d["merger"]["temperature"]``, creating
    sections on the way."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"cannot set {key}: {part!r} is a value, not a section")
    node[leaf] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``data`` with every ``KEY=VALUE`` text applied in order."""
    for text in overrides:
        set_dotted(data, *parse_override(text))
    return data


def config_error(err: Exception, model: type | None = None) -> str:
    """One line for a config that cannot be read or validated: each pydantic error as ``field.path: message``
    (an unknown key with the closest known one when ``model``, the pydantic class, is given)."""
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    return "; ".join(_field_error(e, model) for e in errors())


def _field_error(error: dict[str, Any], model: type | None) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = _field_names(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        message = "unknown key" + (f" (did you mean {'.'.join([*map(str, error['loc'][:-1]), close[0]])}?)"
                                   if close else "")
    return f"{where}: {message}" if where else message


def _field_names(model: type | None, loc: tuple) -> list[str]:
    """The field names of the (nested) pydantic model at ``loc`` under ``model`` (empty if unknown)."""
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        model = getattr(field, "annotation", None)
    return list(getattr(model, "model_fields", {}))


def is_local_path(name: str, named_by_user: bool = False) -> bool:
    """A model or weights name is a local folder (to check) unless it looks like a hub id (``org/name``).

    A path that exists, starts with ``.``, ``/`` or ``~``, has more or fewer than one ``/``, lies in a
    folder that exists here (``outputs/student``), or that the user gave as a folder is local;
    ``models/audio-flamingo-3-think`` given with ``--weights`` is a folder, not a hub id.
    """
    path = Path(name).expanduser()
    return (named_by_user or name.startswith((".", "/", "~")) or name.count("/") != 1 or path.exists()
            or path.parent.is_dir())


def missing_model(name: str | None, flag: str = "--model") -> str | None:
    """Why ``name`` cannot be loaded without asking the hub: a local folder that does not exist or holds
    no ``config.json`` (None when it is a hub id or a checkpoint folder)."""
    if not name or not is_local_path(name):
        return None
    path = Path(name).expanduser()
    if not path.is_dir():
        return f"{flag} {name}: no such folder (give a checkpoint folder, or a hub id like Qwen/Qwen2.5-Omni-3B)"
    if not (path / "config.json").is_file():
        return f"{flag} {name}: no config.json in it (not a checkpoint folder)"
    return None


@contextmanager
def user_errors(prefix: str = "error", show: bool = True) -> Iterator[None]:
    """Within the block, a :class:`UserError` ends the program: ``PREFIX: message`` on stderr (only where
    ``show``, e.g. on rank 0 of a multi-process launch) and exit status 2, no traceback."""
    try:
        yield
    except UserError as err:
        if show:
            print(f"{prefix}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
