"""The dataset card (``OUTDIR/README.md``): the template ``card.md.j2`` filled with the run's statistics."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from jinja2 import Environment, StrictUndefined


def dataset_card(stats: dict[str, Any], splits: list[str], models: list[dict[str, str]],
                 recipe: dict[str, Any], template_name: str = "card.md.j2") -> str:
    """``models``: one ``{role, model, prompt, prompt_sha256, sampling}`` per role; ``recipe``: the
    run's settings (build-avrt's ``card.md.j2``: ``filter``, ``merger_kind``, ``num_frames``,
    ``audio_seconds``, ``sample_rate``; build-questions' ``questions_card.md.j2``: its config's)."""
    template = Environment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(
        files("corpus").joinpath(template_name).read_text(encoding="utf-8"))
    return template.render(stats=stats, splits=splits, models=models, recipe=recipe)
