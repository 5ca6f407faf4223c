"""Evaluation's one typed configuration: a YAML file (``--config``), dotted overrides (``--set``) and
the command's flags, in that order of precedence (flags win).

Defaults come from where the student was trained: frames and audio window from ``media``
(8 frames, the centred 10 s window), the audio/video layout from the trainer's ``av_layout``, and the
answer budget from GRPO's ``max_completion_length`` (the length the student learned to answer in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from media import MediaSettings
from training.train_config import GRPOStageConfig, TrainConfig

Benchmark = Literal["avqa", "avqa-r1-6k", "dailyomni", "manifest", "mmar", "mmau", "omnibench"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Decoding(_Strict):
    """Generation settings (recorded in the report). ``temperature == 0`` means greedy."""

    max_new_tokens: int = Field(GRPOStageConfig.model_fields["max_completion_length"].default,
                                description="answer budget (default: GRPO's max_completion_length)")
    temperature: float = Field(0.0, description="0 = greedy (default); > 0 samples")
    top_p: float = Field(1.0, description="nucleus sampling (with temperature > 0)")
    top_k: int = Field(0, description="top-k sampling, 0 = off (with temperature > 0)")
    seed: int = Field(0, description="sampling seed")
    batch_size: int | None = Field(None, description="items per generate call (hf default 4; openai default max_in_flight)")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def generate_kwargs(self) -> dict[str, Any]:
        if self.greedy:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens, "temperature": None,
                    "top_p": None, "top_k": None}
        return {"do_sample": True, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k or None}

    def describe(self) -> dict[str, Any]:
        out = {"strategy": "greedy" if self.greedy else "sampling", "max_new_tokens": self.max_new_tokens,
               "batch_size": self.batch_size}
        if not self.greedy:
            out.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed)
        return out


class ServerConfig(_Strict):
    """The ``openai`` backend's server and how to call it."""

    base_url: str | None = Field(None, description="server URL ending in /v1")
    served_model: str | None = Field(None, description="the model name the server serves")
    max_in_flight: int = 16
    timeout_s: float = 600.0
    retries: int = 4
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    mm_processor_kwargs: bool = Field(False, description="send each request's frame size and fps as vLLM "
                                      "mm_processor_kwargs (server started with --trust-request-mm-kwargs; "
                                      "needs --model, a local copy of the served model)")


class EvalConfig(_Strict):
    """Everything ``python -m evaluation.evaluate`` needs."""

    benchmark: Benchmark
    data: list[Path] = Field(..., min_length=1, description="annotation file(s) or the folder they were downloaded to")
    model: str | None = Field(None, description="hf, vllm: checkpoint dir; openai: optional local tokenizer of the "
                                                "served model")
    media_root: Path | None = None
    backend: Literal["hf", "openai", "vllm"] = "hf"
    server: ServerConfig = ServerConfig()
    # vllm backend: its own servers (evaluation.vllm_backend)
    gpus: str | None = Field(None, description="vllm: GPUs, one server each (e.g. 0,1); default one server")
    vllm_python: str | None = Field(None, description="vllm: a Python with vLLM (default .venv-vllm)")
    export_cache: Path = Field(Path("outputs/export-cache"),
                               description="vllm: exports of trainer checkpoints, by content")
    modalities: str | None = Field(None, description="av, a, v, t (comma-separated; t: text only); default the "
                                                     "benchmark's full input")
    limit: int | None = None
    out: Path | None = Field(None, description="default outputs/eval/BENCHMARK")
    difficulty_from: Path | None = None
    decoding: Decoding = Decoding()
    media: MediaSettings = MediaSettings()
    layout: Literal["aligned", "separate"] = Field(TrainConfig.model_fields["av_layout"].default,
                                                   description="audio/video layout (the trainer's av_layout)")
    system: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    quiet: bool = False

    @model_validator(mode="after")
    def _backend_needs(self) -> "EvalConfig":
        if self.backend == "openai" and not (self.server.base_url and self.server.served_model):
            raise ValueError("--backend openai needs --base-url URL and --served-model NAME")
        if self.server.mm_processor_kwargs and not self.model:
            raise ValueError("--mm-processor-kwargs needs --model, a local copy of the served model's processor")
        if self.backend in ("hf", "vllm") and not self.model:
            raise ValueError(f"--backend {self.backend} needs --model CHECKPOINT_DIR")
        return self

    @property
    def batch_size(self) -> int:
        return self.decoding.batch_size or (self.server.max_in_flight if self.backend == "openai" else 4)

    @property
    def out_dir(self) -> Path:
        return self.out or Path("outputs/eval") / self.benchmark
