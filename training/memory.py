"""What fits on the GPU: activation checkpointing and the micro-batch, decided from the model and the device.

``plan_memory`` is a pure function. It estimates a training step's peak memory on one device as

* **static**: weights (all parameters, in the training dtype) + gradients and AdamW's two moments (the
  trainable parameters, in the same dtype; sharded over the processes under DeepSpeed ZeRO-2, and the
  moments off the GPU with optimizer offload) + a reference model's weights when GRPO's ``beta > 0``;
* **activations**, per token of the micro-batch: ``ACT_BYTES_PER_HIDDEN`` bytes per hidden unit per
  layer without checkpointing, or the layer inputs plus one layer's activations with it; plus
  ``LOGIT_BYTES_PER_VOCAB`` bytes per vocabulary entry for the logits and the loss's copies of them.

The two constants come from the Qwen2.5-Omni-3B-shaped student on one H200 (``bench/gpu_train.py``,
8 frames 1280x720 + 10 s audio, about 1,550 tokens per sample): batch 1 with checkpointing peaked at
30 GiB, batch 4 without at 57 GiB; the estimate gives 31.6 and 56.3 GiB.

The plan keeps the configured micro-batch and turns checkpointing off when the step fits in
``fraction`` of the device's memory without it; otherwise it turns checkpointing on, and if that still
does not fit it halves the micro-batch (doubling the accumulation, so the effective batch is unchanged)
down to 1. An explicit ``activation_checkpointing`` is kept as given. Without a GPU there is nothing to
plan: checkpointing stays off unless asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 2**30
ACT_BYTES_PER_HIDDEN = 34  # per token, layer and hidden unit, bf16, no checkpointing (attention + MLP)
CKPT_BYTES_PER_HIDDEN = 2  # per token, layer and hidden unit: the saved layer input (bf16)
LOGIT_BYTES_PER_VOCAB = 16  # per token and vocabulary entry: bf16 logits, their fp32 copy, the loss's temporaries


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about the student."""

    params: int  # all parameters (weights on the device)
    trainable: int  # parameters with gradients and optimizer state
    hidden: int
    layers: int
    vocab: int
    dtype_bytes: int = 2


@dataclass(frozen=True)
class Sharding:
    """How optimizer state and gradients are spread (DeepSpeed ZeRO, from ``accelerate launch``)."""

    processes: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    checkpointing: bool
    micro_batch: int
    accumulation: int
    estimate_gib: float | None  # the chosen setting's estimated peak
    budget_gib: float | None  # the share of the device's memory the plan may use
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"micro-batch {self.micro_batch} x {self.accumulation} accumulation, activation checkpointing "
                f"{'on' if self.checkpointing else 'off'} ({self.reason})")


def static_bytes(shape: ModelShape, sharding: Sharding = Sharding(), reference_model: bool = False) -> int:
    """Weights, gradients and AdamW state on one device."""
    b = shape.dtype_bytes
    grads = b * shape.trainable
    moments = 2 * b * shape.trainable
    if sharding.zero_stage >= 1:
        moments //= sharding.processes
    if sharding.zero_stage >= 2:
        grads //= sharding.processes
    if sharding.offload_optimizer:
        moments = 0
    weights = b * shape.params * (2 if reference_model else 1)
    return weights + grads + moments


def activation_bytes_per_token(shape: ModelShape, checkpointing: bool) -> int:
    per_layer = shape.hidden * (CKPT_BYTES_PER_HIDDEN if checkpointing else ACT_BYTES_PER_HIDDEN)
    recompute = shape.hidden * ACT_BYTES_PER_HIDDEN if checkpointing else 0  # one layer rebuilt at a time
    return shape.layers * per_layer + recompute + shape.vocab * LOGIT_BYTES_PER_VOCAB


def estimate_peak_bytes(shape: ModelShape, tokens_per_row: int, micro_batch: int, checkpointing: bool,
                        sharding: Sharding = Sharding(), reference_model: bool = False) -> int:
    return (static_bytes(shape, sharding, reference_model)
            + micro_batch * tokens_per_row * activation_bytes_per_token(shape, checkpointing))


def plan_memory(shape: ModelShape, tokens_per_row: int, micro_batch: int, accumulation: int,
                device_bytes: int | None, checkpointing: bool | None = None, fraction: float = 0.9,
                sharding: Sharding = Sharding(), reference_model: bool = False) -> MemoryPlan:
    """Checkpointing and micro-batch for a step of ``micro_batch`` rows of ``tokens_per_row`` tokens."""
    if device_bytes is None:
        return MemoryPlan(bool(checkpointing), micro_batch, accumulation, None, None,
                          "no GPU: nothing to plan" if checkpointing is None else "as configured")
    budget = fraction * device_bytes

    def estimate(ckpt: bool, batch: int) -> int:
        return estimate_peak_bytes(shape, tokens_per_row, batch, ckpt, sharding, reference_model)

    def plan(ckpt: bool, batch: int, reason: str) -> MemoryPlan:
        return MemoryPlan(ckpt, batch, accumulation * micro_batch // batch, round(estimate(ckpt, batch) / GIB, 1),
                          round(budget / GIB, 1), reason)

    options = [(checkpointing, micro_batch)] if checkpointing is not None else [(False, micro_batch),
                                                                               (True, micro_batch)]
    for ckpt, batch in options:
        if estimate(ckpt, batch) <= budget:
            chosen = "as configured" if checkpointing is not None else (
                "fits without it" if not ckpt else
                f"needed: {estimate(False, batch) / GIB:.1f} GiB without it")
            return plan(ckpt, batch, chosen)
    ckpt = True if checkpointing is None else checkpointing
    batch = micro_batch
    while batch > 1 and accumulation * micro_batch % (batch // 2) == 0:
        batch //= 2
        if estimate(ckpt, batch) <= budget:
            return plan(ckpt, batch, f"micro-batch {micro_batch} does not fit; lowered to {batch}")
    return plan(ckpt, batch, "does not fit even at micro-batch 1: use DeepSpeed ZeRO-2 with optimizer offload "
                             "(configs/accelerate/zero2_offload.yaml) or more GPUs")
