"""The typed configuration of build-avrt (YAML file + CLI overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from configs import parse_value, read_yaml, set_dotted
from media import MediaSettings
from media.files import content_key
from prompts import load_prompt, prompt_sha256
from teachers.registry import lookup

# The paper's model for each role (AVRT sec. 4.1): a role section without ``use`` takes its prompt
# and sampling from this registry entry; ``model`` and ``base_url`` are all it must give.
PAPER_ROLES = {"vision": "kimi-vl-a3b-thinking", "audio": "audio-flamingo-3-think", "merger": "qwen2.5-14b-instruct"}
ROLE_DEFAULT_FIELDS = ("prompt", "temperature", "top_p", "max_tokens")

FilterPolicy = Literal["both", "vision", "audio", "either", "all"]
MergerKind = Literal["llm", "concat"]


class EndpointConfig(BaseModel):
    """One model behind an OpenAI-compatible API (a teacher or the merger)."""

    model_config = ConfigDict(extra="forbid")

    use: str | None = Field(None, description="registry entry supplying the defaults below")
    role: Literal["vision", "audio", "merger"] | None = Field(None, description="the role a registry entry is made for (checked)")
    model: str = Field(..., description="model name as the server knows it")
    base_url: list[str] = Field(..., description="one URL or a list of replicas of the same model")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    prompt: str = Field(..., description="prompt name in prompts/ or a file path (default: the role's paper prompt); "
                        "'' with media_only")
    question_suffix: str = Field("", description="text after the question, e.g. AF3's think-mode trigger")
    media_only: bool = Field(False, description="send the media alone, no prompt or question (a captioner, e.g. "
                             "Qwen3-Omni-30B-A3B-Captioner, takes no text): it describes and gives no answer")
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 4096
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields, e.g. top_k")
    timeout_s: float = 600.0
    max_in_flight: int = Field(16, description="requests in flight per replica, shared by every shard of a process")
    retries: int = Field(4, description="retries on timeouts, 429 and 5xx, with exponential backoff")
    backoff_s: float = Field(1.0, gt=0, description="the first retry's delay in seconds, doubled for each next one "
                                                    "(with jitter)")
    source: str | None = Field(None, description="where the settings come from (documentation only)")

    @field_validator("base_url", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _prompt_or_media_only(self) -> "EndpointConfig":
        if self.media_only and (self.prompt or self.question_suffix):
            raise ValueError(f"{self.model}: media_only sends no text: set prompt: '' (and no question_suffix)")
        if not self.media_only and not self.prompt:
            raise ValueError(f"{self.model}: no prompt (only a media_only endpoint goes without one)")
        return self

    def prompt_text(self) -> str:
        """The prompt file's text ('' for a media_only endpoint)."""
        return "" if self.media_only else load_prompt(self.prompt)

    def sampling(self) -> dict[str, Any]:
        """The parameters that determine the answer (part of the cache key and the provenance)."""
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        return {**params, **self.extra_body}


def resolve_endpoint(entry: Any, extra: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> Any:
    """A role's section with its registry entry filled in: ``use: NAME`` (or a bare name) takes every
    field of that entry; a section without ``use`` takes ``ROLE_DEFAULT_FIELDS`` from ``defaults``
    (the role's default entry). The section's own fields win."""
    if isinstance(entry, str):
        entry = {"use": entry}
    if isinstance(entry, dict) and entry.get("use"):
        return {**lookup(entry["use"], extra), **entry}
    if isinstance(entry, dict):
        return {**{k: defaults[k] for k in ROLE_DEFAULT_FIELDS if k in defaults}, **entry}
    return entry


class RunSettings(BaseModel):
    """How a flow runs, shared by build-avrt and build-questions: media, sharding, the task runner, the
    cache. Each flow's config adds its roles and an ``endpoints()`` method (``flows.execution``)."""

    model_config = ConfigDict(extra="forbid")

    registry: dict[str, dict[str, Any]] = Field(default_factory=dict, description="extra registry entries")
    media: MediaSettings = Field(default_factory=MediaSettings)
    shard_size: int = Field(64, description="samples per Prefect task")
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = Field(None, description="scheduler address; None starts a local cluster")
    dask_workers: int = Field(2, description="worker processes of the local Dask cluster; each gets max_in_flight // workers per replica")
    max_concurrent_shards: int | None = Field(
        None, description="shards admitted at once; None: enough to keep every in-flight slot busy (flows.execution)")
    cache_dir: Path | None = Field(None, description="content-addressed cache; default OUTDIR/cache")
    split: str = Field("train", description="split label for rows whose manifest gives none")

    @model_validator(mode="before")
    @classmethod
    def _resolve_registry(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return cls.resolve_roles(data, data.get("registry") or {})

    @classmethod
    def resolve_roles(cls, data: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``data`` with each role section's registry entry filled in (``resolve_endpoint``)."""
        return data


class BuildConfig(RunSettings):
    """Everything build-avrt needs besides the manifest and the output directory."""

    vision_teacher: EndpointConfig
    audio_teacher: EndpointConfig
    merger: EndpointConfig
    filter: FilterPolicy = Field("both", description="which teachers must be right: both (paper), vision, audio, either, all")
    merger_kind: MergerKind = Field("llm", description="llm (paper) or concat (deterministic baseline)")
    merger_attempts: int = Field(3, description="fresh merger calls before a sample is dropped")
    stats_tokenizer: str | None = Field(None, description="tokenizer (path or id) counting think length in student tokens; words if unset or unavailable")

    def endpoints(self) -> list[EndpointConfig]:
        return [endpoint(self, role) for role in ROLES]

    @classmethod
    def resolve_roles(cls, data: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
        for role in ("vision_teacher", "audio_teacher", "merger"):
            data[role] = resolve_endpoint(data.get(role), extra, lookup(PAPER_ROLES[role.split("_")[0]], extra))
        return data

    @model_validator(mode="after")
    def _filter_needs_answers(self) -> "BuildConfig":
        """A media_only teacher (a captioner) gives no answer: the filter cannot require it to be right."""
        for section, role in (("vision_teacher", "vision"), ("audio_teacher", "audio")):
            ep = getattr(self, section)
            if ep.media_only and self.filter in ("both", role):
                other = "audio" if role == "vision" else "vision"
                raise ValueError(f"{section} {ep.use or ep.model!r} describes the {role} and gives no answer, so "
                                 f"filter {self.filter!r} would reject every sample: use filter: {other} (or all)")
        return self

    @model_validator(mode="after")
    def _roles_match(self) -> "BuildConfig":
        """A registry entry made for one role cannot fill another (e.g. an audio model as vision teacher)."""
        for section, role in (("vision_teacher", "vision"), ("audio_teacher", "audio"), ("merger", "merger")):
            ep = getattr(self, section)
            if ep.role is not None and ep.role != role:
                raise ValueError(f"{section} uses {ep.use!r}, a registry entry for the {ep.role} role")
        return self


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None,
                model: type[RunSettings] = BuildConfig, roles: tuple[str, ...] = ("vision_teacher", "audio_teacher", "merger")):
    """Read a YAML config and apply ``{"dotted.key": value}`` overrides on top; ``model`` validates it
    (build-avrt's ``BuildConfig`` by default), ``roles`` are its endpoint sections."""
    data = read_yaml(path)
    for key, value in (overrides or {}).items():
        if key in roles:
            # selecting a registry entry by name keeps the config's endpoint (base_url, keys)
            current = data.get(key) or {}
            current = {"use": current} if isinstance(current, str) else dict(current)
            data[key] = {k: v for k, v in current.items() if k in ("base_url", "api_key_env", "max_in_flight", "timeout_s")} | {"use": value}
        else:
            set_dotted(data, key, parse_value(value))
    return model.model_validate(data)


ROLES = ("vision", "audio", "merger")


def endpoint(config: BuildConfig, role: str) -> EndpointConfig:
    return {"vision": config.vision_teacher, "audio": config.audio_teacher, "merger": config.merger}[role]


def config_fingerprint(config: BuildConfig) -> str:
    """Everything in the config that changes the rows of a shard."""
    parts: dict[str, Any] = {"media": config.media.model_dump(), "filter": config.filter,
                             "merger_kind": config.merger_kind, "merger_attempts": config.merger_attempts}
    for role in ROLES:
        parts[role] = endpoint_fingerprint(endpoint(config, role))
    return content_key(**parts)


def endpoint_fingerprint(ep: EndpointConfig) -> dict[str, Any]:
    """What in an endpoint changes its answers: the model, the prompt's sha256, the sampling."""
    return {"model": ep.model, "prompt": prompt_sha256(ep.prompt_text()), "sampling": ep.sampling()}
