"""The typed configuration of build-questions (YAML file + CLI overrides), on build-avrt's run settings.

Each role is an endpoint section shaped like build-avrt's (``model``, ``base_url``, ``use:`` a registry
name, sampling, ``max_in_flight``). A section without its own ``prompt`` gets the role's prompt file
(``ROLE_PROMPTS``; the writer's depends on ``question_kind``), also under ``use:`` an entry made for
another job (the merger's Qwen2.5-14B-Instruct writes questions with the writer's prompt). A
``media_only`` entry (the Qwen3-Omni Captioner) keeps no prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from filters.questions import Bounds
from flows.config import EndpointConfig, RunSettings, endpoint_fingerprint, load_config, resolve_endpoint
from media.files import content_key

QuestionKind = Literal["audio", "audio_visual"]
QUESTION_ROLES = ("audio_captioner", "vision_captioner", "question_writer", "blind_solver")
# the registry role an entry must be made for: captioners hear or see, the writer and solver read text
REGISTRY_ROLE = {"audio_captioner": "audio", "vision_captioner": "vision", "question_writer": "merger",
                 "blind_solver": "merger"}


def role_prompt(role: str, kind: str) -> str:
    """The default prompt file of ``role`` (``prompts/<name>.txt``)."""
    return f"question_writer_{kind}" if role == "question_writer" else role


class QuestionsConfig(RunSettings):
    """Everything build-questions needs besides the clips and the output directory."""

    audio_captioner: EndpointConfig | None = Field(None, description="describes the clip's audio (not needed with --captions)")
    vision_captioner: EndpointConfig | None = Field(None, description="describes the 8 frames (audio_visual questions)")
    question_writer: EndpointConfig
    blind_solver: EndpointConfig | None = Field(None, description="answers from the question's text alone: "
                                                "a question it gets right is dropped")
    question_kind: QuestionKind = Field("audio", description="audio (Omni-R1) or audio_visual (needs both captions)")
    questions_per_clip: int = Field(1, ge=1, le=8, description="questions the writer is asked for per clip")
    question_words: tuple[int, int] = Field((Bounds.question_min, Bounds.question_max),
                                            description="a question's length bounds in words")
    option_words: tuple[int, int] = Field((Bounds.option_min, Bounds.option_max),
                                          description="an option's length bounds in words")
    seed: int = Field(0, description="seeds where the correct answer is placed (with each clip's id)")

    @classmethod
    def resolve_roles(cls, data: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
        kind = data.get("question_kind", "audio")
        for role in QUESTION_ROLES:
            section = data.get(role)
            if section is None:
                continue
            own = {"use": section} if isinstance(section, str) else section
            resolved = resolve_endpoint(own, extra, {"prompt": role_prompt(role, kind)})
            if isinstance(own, dict) and "prompt" not in own and isinstance(resolved, dict) and not resolved.get("media_only"):
                resolved = {**resolved, "prompt": role_prompt(role, kind)}
            data[role] = resolved
        return data

    @model_validator(mode="after")
    def _roles_fit(self) -> "QuestionsConfig":
        for role, wanted in REGISTRY_ROLE.items():
            ep = getattr(self, role)
            if ep is not None and ep.role is not None and ep.role != wanted:
                raise ValueError(f"{role} uses {ep.use!r}, a registry entry for the {ep.role} role "
                                 f"({role} needs a {wanted} model)")
        if self.question_kind == "audio_visual" and self.vision_captioner is None:
            raise ValueError("question_kind audio_visual needs a vision_captioner (the writer sees both captions)")
        return self

    def endpoints(self) -> list[EndpointConfig]:
        return [ep for role in QUESTION_ROLES if (ep := getattr(self, role)) is not None]

    def roles(self) -> dict[str, EndpointConfig]:
        return {role: ep for role in QUESTION_ROLES if (ep := getattr(self, role)) is not None}

    def bounds(self) -> Bounds:
        return Bounds(*self.question_words, *self.option_words)


def load_questions_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> QuestionsConfig:
    """Read a YAML config and apply ``{"dotted.key": value}`` overrides (``flows.config.load_config``)."""
    return load_config(path, overrides, model=QuestionsConfig, roles=QUESTION_ROLES)


def questions_fingerprint(config: QuestionsConfig) -> str:
    """Everything in the config that changes a clip's row."""
    return content_key(media=config.media.model_dump(), kind=config.question_kind, per_clip=config.questions_per_clip,
                       bounds=[config.question_words, config.option_words], seed=config.seed,
                       roles={role: endpoint_fingerprint(ep) for role, ep in config.roles().items()})
