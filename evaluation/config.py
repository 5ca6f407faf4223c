"""Evaluation's one typed configuration: a YAML file (``--config``), dotted overrides (``--set``) and
the command's flags, in that order of precedence (flags win).

Defaults come from where the student was trained: frames and audio window from ``media``
(8 frames, the centred 10 s window), the audio/video layout from the trainer's ``av_layout``, and the
answer budget from GRPO's ``max_completion_length`` (the length the student learned to answer in).
A student trained by another recipe (``--recipe``, or the ``training_config.yaml`` the trainer saves
beside its weights) is asked as it was trained: that recipe's prompt, system turn, layout, image
size cap and answer budget, unless the command sets them (:func:`trained_defaults`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from media import MediaSettings
from training.train_config import SAVED_CONFIG, GRPOStageConfig, TrainConfig

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
    prompt: str = Field(TrainConfig.model_fields["prompt"].default,
                        description="the student's prompt file (prompts/NAME.txt or a path), as trained")
    image_max_pixels: int | None = Field(None, gt=0, description="still images resized to at most this many pixels "
                                                                 "(the trainer's data.image_max_pixels)")
    recipe: str | None = Field(None, description="how the student was trained: a recipe of configs/recipes/ or a "
                                                 "trainer config; default the checkpoint's training_config.yaml")
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


def recipe_config(recipe: str | None, model: str | None) -> Path | None:
    """The trainer config a student was trained with: ``recipe`` (a name of ``configs/recipes/`` or a YAML
    path), else ``model``'s ``training_config.yaml`` if it has one, else None."""
    from configs import RECIPES, UserError

    if recipe is not None:
        path = RECIPES / f"{recipe}.yaml" if (RECIPES / f"{recipe}.yaml").is_file() else Path(recipe)
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
            raise UserError(f"--recipe {recipe}: no such recipe (known: {known}) or trainer config file")
        return path
    saved = Path(model) / SAVED_CONFIG if model else None
    return saved if saved is not None and saved.is_file() else None


def trained_defaults(path: Path) -> dict[str, Any]:
    """EvalConfig values (nested, as in a YAML) that follow from the trainer config at ``path``."""
    from training.train_config import read_config

    trained = read_config(path)
    return {"prompt": trained.prompt, "system": trained.system_prompt, "layout": trained.av_layout,
            "image_max_pixels": trained.data.image_max_pixels,
            "decoding": {"max_new_tokens": trained.grpo.max_completion_length}}
