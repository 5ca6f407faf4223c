"""The trainer's one typed configuration: YAML file + dotted ``key=value`` overrides.

``load_config("configs/recipes/avrt.yaml", ["sft.max_steps=2", "grpo.beta=0"])`` returns a validated
``TrainConfig``; unknown keys are rejected, values are parsed as YAML (``2e-6``, ``true``, ``[a, b]``).
Defaults are the paper's (AVRT section 4.2): SFT 1 epoch, lr 2e-6, cosine, 100 warmup steps, weight
decay 0.01, AdamW(0.9, 0.999, 1e-8), effective batch 32 (1 per device x 8 accumulation x 4 GPUs);
GRPO G=4, clip 0.2, beta 0.01, temperature 1, format + accuracy rewards weighted 1:1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from configs import UserError, apply_overrides, config_error, read_yaml
from corpus.schema import TARGET

SAVED_CONFIG = "training_config.yaml"  # the resolved config, kept beside each stage's final weights


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """The training data, which of its rows, and which modalities the student sees."""

    # A build-avrt output folder (its corpus/*.parquet), or a dataset as published: an AVQA-R1-6K split
    # folder, R1-AQA's AVQA JSONL, AVQA's annotation JSON, ARC-Easy, a project manifest (docs/recipes.md).
    path: str = "outputs/avrt"
    split: str = "train"  # rows with this `split` value (all rows if the data has no splits)
    skip_invalid: bool = False  # published data: train on the valid rows, listing the others, instead of stopping
    max_samples: int | None = None  # first N rows (demo, tests)
    vision: bool = True  # give the student the 8 frames
    audio: bool = True  # give the student the audio
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # P(drop frames) = P(drop audio), never both
    # A still image larger than this is resized (aspect kept) before the processor sees it (EchoInk-R1:
    # 256 x 28 x 28); None: the student's own cap (student.inputs.IMAGE_MAX_PIXELS).
    image_max_pixels: int | None = Field(None, gt=0)


# Names earlier configs used for fields that now carry TRL's names.
RENAMED = {"epochs": "num_train_epochs", "lr_scheduler": "lr_scheduler_type",
           "per_device_batch_size": "per_device_train_batch_size"}


class OptimConfig(_Strict):
    """Optimisation settings shared by both stages (each stage has its own copy). Every field named
    as in TRL's ``SFTConfig``/``GRPOConfig`` reaches it under that name (``training.runtime.trl_config``)."""

    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    learning_rate: float = 2e-6
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    logging_steps: int = 10
    save_steps: int = 200
    # Resumable checkpoints kept while a stage runs (each holds the optimizer state: about 35 GB at 3B);
    # the last one is deleted once the stage's final/ is written.
    save_total_limit: int | None = 1

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in RENAMED.items():
            if old in data:
                if new in data:
                    raise ValueError(f"{old} and {new} both given ({old} is the old name of {new})")
                data[new] = data.pop(old)
        return data


class SFTStageConfig(OptimConfig):
    """Stage 1: supervised fine-tuning on the merged traces (loss on the answer only)."""

    OURS: ClassVar[frozenset[str]] = frozenset({"target_column"})  # fields TRL does not take
    target_column: str = TARGET  # the `<think>…</think><answer>X</answer>` trace
    # The paper's 8 samples per GPU and optimizer step, as 4 x 2: a micro-batch of 4 keeps the GPU busy
    # (lowered automatically, with the accumulation raised to match, when it does not fit: fit_to_memory).
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 2
    # Batches of rows of similar length (by text tokens), so that little of a micro-batch is padding.
    train_sampling_strategy: Literal["random", "group_by_length", "sequential"] = "group_by_length"


class LengthRewardConfig(_Strict):
    min_words: int = 100
    max_words: int = 200
    sigma: float = 50.0


class GRPOStageConfig(OptimConfig):
    """Stage 2: GRPO from the SFT result."""

    # become TRL's reward_funcs/weights, or configure the rollout engine (training.rollout)
    OURS: ClassVar[frozenset[str]] = frozenset({"rewards", "length_reward", "rollout", "rollout_urls",
                                                "rollout_gpu_memory", "rollout_sync_dir", "rollout_weight_sync",
                                                "rollout_server_timeout_s", "rollout_secret_env",
                                                "rollout_allow_unguarded"})

    learning_rate: float = 1e-6  # not given by the paper; Omni-R1's value for this student family
    warmup_steps: int = 0
    # completions per device and micro-step (one group of G=4)
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 2  # x 4 GPUs: 32 completions = 8 prompts x G per optimiser step
    num_generations: int = 4  # G
    epsilon: float = 0.2  # clip
    beta: float = 0.01  # KL weight (> 0 loads a reference model from the policy's directory)
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 512
    loss_type: str = "grpo"  # per-sequence 1/|o_i| normalisation, as the paper's objective (eq. 6)
    # reward name (training.rewards.REWARDS) -> weight; the total is their weighted sum
    rewards: dict[str, float] = {"format": 1.0, "accuracy": 1.0}
    length_reward: LengthRewardConfig = LengthRewardConfig()
    log_completions: bool = False
    # Who samples the completions: Hugging Face `generate` in the trainer ("hf"), or vLLM ("vllm",
    # training.rollout): the servers in `rollout_urls` (replicas, dev mode), else one the trainer starts
    # itself from .venv-vllm on the same GPU with `rollout_gpu_memory` of its memory.
    rollout: Literal["hf", "vllm"] = "hf"
    rollout_urls: list[str] = []  # e.g. [http://gpu1:8000/v1, http://gpu2:8000/v1]
    rollout_gpu_memory: float = Field(0.3, gt=0.0, lt=1.0)  # vLLM's --gpu-memory-utilization when started here
    # how weights reach the servers (training.weight_sync): auto is ipc (CUDA IPC) for a GPU policy with
    # its own server, else files (tmpfs: the servers must be able to read rollout_sync_dir); nccl for
    # servers on other GPUs started with the flag (refused without rollout_urls)
    rollout_weight_sync: Literal["auto", "ipc", "nccl", "files"] = "auto"
    rollout_sync_dir: str | None = None  # folder for the weights the servers reload (default: a tmpfs one)
    rollout_server_timeout_s: float = 600.0  # start-up of a server started here, and each request
    # Every request to a rollout server carries the run's secret, and the servers refuse requests without
    # it (serving/guard/avrt_guard.py). A server started here gets a fresh one; for rollout_urls the
    # trainer reads it from this environment variable (the servers from AVRT_ROLLOUT_SECRET): the secret
    # itself never goes into a config.
    rollout_secret_env: str = Field("AVRT_ROLLOUT_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # A server of rollout_urls that answers a control request without the secret stops the run at
    # start-up; true: warn and run anyway (anyone who can reach such a server can replace the weights).
    rollout_allow_unguarded: bool = False
    # Truncated importance sampling on the engine's sampling log-probs (TRL's names; on with vllm):
    # per-token ratio policy/engine, clipped at clip_max.
    vllm_importance_sampling_correction: bool = True
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate",
                                           "sequence_mask"] = "token_truncate"
    vllm_importance_sampling_clip_max: float = 3.0

    @model_validator(mode="after")
    def _known_rewards(self) -> "GRPOStageConfig":
        from training.rewards import REWARDS

        unknown = sorted(set(self.rewards) - set(REWARDS))
        if unknown:
            raise ValueError(f"grpo.rewards: unknown reward {', '.join(unknown)} (known: {', '.join(REWARDS)})")
        if not any(self.rewards.values()):
            raise ValueError("grpo.rewards: every weight is 0")
        return self

    @model_validator(mode="after")
    def _rollout_urls_need_vllm(self) -> "GRPOStageConfig":
        if self.rollout_urls and self.rollout != "vllm":
            raise ValueError("grpo.rollout_urls is set but grpo.rollout is not vllm")
        return self

    @model_validator(mode="after")
    def _nccl_needs_other_gpus(self) -> "GRPOStageConfig":
        # the server the trainer starts shares the policy's GPU (set up for CUDA IPC), and NCCL refuses
        # two ranks on one GPU: refused here rather than at the first weight sync
        if self.rollout == "vllm" and self.rollout_weight_sync == "nccl" and not self.rollout_urls:
            raise ValueError("grpo.rollout_weight_sync=nccl needs rollout servers on other GPUs, listed in "
                             "grpo.rollout_urls: without them the trainer starts its own server on the policy's "
                             "GPU, where NCCL refuses two ranks; use auto or ipc for that server")
        return self


class TrainConfig(_Strict):
    """Everything ``python -m training.sft_then_grpo`` needs."""

    model: str = "Qwen/Qwen2.5-Omni-3B"  # base student: hub id or local directory
    output_dir: str = "outputs/train/avrt"
    stages: list[Literal["sft", "grpo"]] = ["sft", "grpo"]
    seed: int = 42
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # None: decided per stage from the model's size and the GPU's memory (training/memory.py; logged and
    # written to STAGE/memory_plan.json); off on CPU. `gradient_checkpointing` is still accepted (old name).
    activation_checkpointing: bool | None = None
    # Plan checkpointing and the micro-batch by memory (micro-batch halved, accumulation doubled, only when
    # the configured one does not fit even with checkpointing). Off: the config's values as they are.
    fit_to_memory: bool = True
    # The memory a training process may use, in GiB. None: 90 % of the GPU's. Set it when the GPU is shared
    # (a colocated vLLM rollout engine takes its own share).
    memory_budget_gib: float | None = Field(None, gt=0)
    freeze_encoders: bool = True  # the paper freezes the vision and audio modules
    # Frozen encoders run once per prompt per step (no_grad) and their outputs are reused (exact).
    encoder_cache: bool = True
    # Clips: audio inside the video on one time axis ("aligned", Qwen2.5-Omni's video-with-sound layout)
    # or as a separate part after the video ("separate"). Image + audio items are always separate.
    av_layout: Literal["aligned", "separate"] = "aligned"
    system_prompt: str | None = None  # optional system turn (also used by evaluation if set)
    # The user turn's text: a file of prompts/ (student: AVRT's; echoink_r1, omni_r1) or a path; evaluation
    # uses the same one for a checkpoint trained with it
    prompt: str = "student"
    dataloader_num_workers: int = 0
    report_to: str = "none"
    data: DataConfig = DataConfig()
    sft: SFTStageConfig = SFTStageConfig()
    grpo: GRPOStageConfig = GRPOStageConfig()

    @property
    def corpus(self) -> str:
        """The training data (``data.path``; ``corpus`` is its old name)."""
        return self.data.path

    @model_validator(mode="before")
    @classmethod
    def _old_corpus_name(cls, data: Any) -> Any:
        """``corpus: DIR`` (the old key) -> ``data.path``."""
        if isinstance(data, dict) and "corpus" in data:
            data = dict(data)
            section = dict(data.get("data") or {})
            if "path" in section:
                raise ValueError("corpus and data.path both given (corpus is the old name of data.path)")
            section["path"] = data.pop("corpus")
            data["data"] = section
        return data

    @model_validator(mode="after")
    def _known_prompt(self) -> "TrainConfig":
        from prompts import prompt_path

        if not prompt_path(self.prompt).is_file():
            raise ValueError(f"prompt: no prompt file {self.prompt!r} (a name in prompts/ or a path)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _old_checkpointing_name(cls, data: Any) -> Any:
        """``gradient_checkpointing`` -> ``activation_checkpointing`` (the later key wins if both are set)."""
        if isinstance(data, dict) and "gradient_checkpointing" in data:
            keys = list(data)
            data = dict(data)
            old = data.pop("gradient_checkpointing")
            if "activation_checkpointing" not in data or keys.index("gradient_checkpointing") > keys.index(
                    "activation_checkpointing"):
                data["activation_checkpointing"] = old
        return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or the defaults), apply dotted overrides, validate. An override of the old key
    ``corpus`` sets ``data.path``."""
    overrides = [f"data.path{item[len('corpus'):]}" if item.startswith("corpus=") else item for item in overrides or []]
    return TrainConfig.model_validate(apply_overrides(read_yaml(path), overrides))


def read_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """``load_config`` for a command line: a config that cannot be read or validated is a ``UserError``
    naming the key (``sft.max_step: unknown key (did you mean sft.max_steps?)``)."""
    try:
        return load_config(path, overrides)
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise UserError(config_error(err, TrainConfig)) from None


def dump_config(config: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
