"""Pieces both training stages share: the student model, precision, memory plan, metrics, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from student.family import family_of
from training.memory import GIB, MemoryPlan, ModelShape, Sharding, plan_memory
from training.train_config import TrainConfig


def use_bf16(config: TrainConfig) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and torch.cuda.is_available())


def is_main_process() -> bool:
    """Rank 0 of a multi-process launch (torchrun, accelerate, deepspeed), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """Print on rank 0 only: one progress line per run, not one per process."""
    if is_main_process():
        print(message, flush=True)


def sharding_from_env() -> Sharding:
    """Process count and DeepSpeed ZeRO settings as ``accelerate launch`` exports them."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return Sharding(processes)
    return Sharding(processes, int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0")),
                    os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") not in ("none", ""))


def model_shape(model) -> ModelShape:
    text = model.config.get_text_config()
    params = list(model.parameters())
    return ModelShape(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad),
                      hidden=text.hidden_size, layers=text.num_hidden_layers, vocab=text.vocab_size,
                      dtype_bytes=params[0].element_size())


def memory_plan(config: TrainConfig, stage, model, tokens_per_row: Callable[[], int],
                reference_model: bool = False) -> MemoryPlan:
    """The stage's checkpointing and micro-batch (``training.memory``) for this model on this device.

    ``tokens_per_row`` is only called when there is a device to plan for (it processes a few rows)."""
    if config.memory_budget_gib is not None:
        device, fraction = config.memory_budget_gib * GIB, 1.0
    elif torch.cuda.is_available():
        device, fraction = torch.cuda.get_device_properties(0).total_memory, 0.9
    else:
        device, fraction = None, 1.0
    micro, accumulation = stage.per_device_train_batch_size, stage.gradient_accumulation_steps
    if device is None or not config.fit_to_memory:
        reason = "no GPU: nothing to plan" if device is None else "fit_to_memory is off"
        return MemoryPlan(bool(config.activation_checkpointing), micro, accumulation, None, None,
                          reason if config.activation_checkpointing is None else "as configured")
    return plan_memory(model_shape(model), tokens_per_row(), micro, accumulation, device,
                       config.activation_checkpointing, fraction, sharding_from_env(), reference_model)


def use_encoder_cache(config: TrainConfig) -> bool:
    """Encode media once and reuse the outputs: only exact when the encoders are frozen."""
    return config.encoder_cache and config.freeze_encoders


def load_student(path: str | Path, config: TrainConfig):
    """The student thinker of ``path``'s family (Qwen2.5-Omni or Qwen3-Omni; bf16 on GPU, fp32 on CPU),
    with its encoders frozen if configured."""
    dtype = torch.bfloat16 if use_bf16(config) else torch.float32
    model = family_of(path).thinker_class().from_pretrained(str(path), dtype=dtype)
    if config.freeze_encoders:
        freeze_encoders(model)
    return model


def freeze_encoders(model) -> None:
    """Freeze the family's encoders, ``model.model.audio_tower`` and ``model.model.visual`` (the paper's
    setting); the text model, MoE experts and routers included, stays trainable."""
    for module in family_of(model).encoder_modules(model):
        module.requires_grad_(False)


def load_processor(path: str | Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


class JsonlMetrics(TrainerCallback):
    """Appends every log record (with its step) to ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resume_point(stage_dir: Path) -> str | None:
    """The last ``checkpoint-N`` in ``stage_dir`` (metrics after it are dropped), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not stage_dir.exists():
        return None
    last = get_last_checkpoint(str(stage_dir))
    metrics = stage_dir / "metrics.jsonl"
    if not is_main_process():  # rank 0 alone owns the metrics file
        return last
    if last is None:
        metrics.unlink(missing_ok=True)  # a fresh start: no stale records
        return None
    step = int(Path(last).name.split("-")[-1])
    kept = [r for r in read_metrics(metrics) if r.get("step", 0) <= step]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
    say(f"[{stage_dir.name}] resuming from {Path(last).name}")
    return last


def trl_config(trl_class: type, stage, config: TrainConfig, out_dir: Path, plan: MemoryPlan, **extra: Any):
    """``trl_class`` (SFTConfig or GRPOConfig) built from ``stage``: every stage field goes to TRL under
    its own name (except the stage's ``OURS``), the memory plan's micro-batch, accumulation and
    checkpointing, the run-wide settings and ``extra``."""
    known = {f.name for f in dataclasses.fields(trl_class)}
    fields = {k: v for k, v in stage.model_dump().items() if k not in stage.OURS}
    fields.update(per_device_train_batch_size=plan.micro_batch, gradient_accumulation_steps=plan.accumulation)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"{trl_class.__name__} has no field {', '.join(unknown)}: rename it or add it to OURS")
    return trl_class(
        **fields,
        output_dir=str(out_dir),
        save_strategy="steps",
        bf16=use_bf16(config),
        activation_checkpointing=plan.checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        dataloader_num_workers=config.dataloader_num_workers,
        report_to=config.report_to,
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        **extra,
    )

class NoLastStepCheckpoint(TrainerCallback):
    """Skip the checkpoint Trainer writes at the last step: ``final/`` is written right after it, and a
    checkpoint's optimizer state (about 26 GB at 3B) would be written only to be deleted."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False
        return control


def save_final(trainer, out_dir: Path) -> Path:
    """Write ``out_dir/final`` (model + processor, rank 0), then drop the stage's resumable checkpoints:
    nothing reads their optimizer state once ``final/`` exists."""
    final = out_dir / "final"
    trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(final))
        for checkpoint in out_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return final


def write_plan(out_dir: Path, stage_name: str, plan: MemoryPlan) -> None:
    """Log the memory plan (rank 0) and keep it beside the stage's metrics."""
    say(f"[{stage_name}] memory plan: {plan.describe()}"
        + (f"; estimated peak {plan.estimate_gib} GiB of {plan.budget_gib} GiB" if plan.estimate_gib else ""))
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "memory_plan.json").write_text(json.dumps(plan.as_dict()) + "\n")
