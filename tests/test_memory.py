"""The memory plan: activation checkpointing and micro-batch chosen from the model and the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.memory import GIB, ModelShape, Sharding, estimate_peak_bytes, plan_memory

# Qwen2.5-Omni-3B-shaped thinker (training.tiny_models --preset omni-3b-shape), encoders frozen, bf16
OMNI_3B = ModelShape(params=4_703_464_448, trainable=3_397_103_616, hidden=2048, layers=36, vocab=151_936)
TOKENS = 1550  # 8 frames 1280x720 + 10 s audio + question + trace
H200, A100_40G, L4 = 143_771 * 2**20, 40 * 10**9, 24 * 10**9


def test_estimate_matches_the_h200_measurements_it_was_calibrated_on():
    # bench/gpu_train.py on one H200: batch 1 with checkpointing peaked at 30 GiB, batch 4 without at 57 GiB
    assert estimate_peak_bytes(OMNI_3B, TOKENS, 1, True) / GIB == pytest.approx(30, rel=0.1)
    assert estimate_peak_bytes(OMNI_3B, TOKENS, 4, False) / GIB == pytest.approx(57, rel=0.1)


def test_large_gpu_turns_checkpointing_off_at_the_configured_micro_batch():
    plan = plan_memory(OMNI_3B, TOKENS, micro_batch=4, accumulation=2, device_bytes=H200)
    assert (plan.checkpointing, plan.micro_batch, plan.accumulation) == (False, 4, 2)
    assert plan.reason == "fits without it" and plan.estimate_gib < plan.budget_gib


def test_smaller_gpu_checkpoints_then_lowers_the_micro_batch_keeping_the_effective_batch():
    plan = plan_memory(OMNI_3B, TOKENS, micro_batch=4, accumulation=2, device_bytes=A100_40G)
    assert plan.checkpointing and plan.micro_batch * plan.accumulation == 8 and plan.micro_batch < 4
    assert plan.estimate_gib <= plan.budget_gib


def test_model_that_cannot_fit_says_what_to_do():
    plan = plan_memory(OMNI_3B, TOKENS, micro_batch=4, accumulation=2, device_bytes=L4)
    assert plan.checkpointing and plan.micro_batch == 1 and plan.accumulation == 8
    assert "zero2_offload.yaml" in plan.reason


def test_zero2_offload_sharding_makes_it_fit():
    sharding = Sharding(processes=4, zero_stage=2, offload_optimizer=True)
    plan = plan_memory(OMNI_3B, TOKENS, 4, 2, L4, sharding=sharding)
    assert plan.estimate_gib <= plan.budget_gib


def test_explicit_setting_is_kept_and_no_gpu_plans_nothing():
    kept = plan_memory(OMNI_3B, TOKENS, 4, 2, H200, checkpointing=True)
    assert (kept.checkpointing, kept.micro_batch, kept.reason) == (True, 4, "as configured")
    cpu = plan_memory(OMNI_3B, TOKENS, 4, 2, None)
    assert (cpu.checkpointing, cpu.micro_batch, cpu.estimate_gib) == (False, 4, None)


@pytest.mark.slow
def test_sft_plans_groups_by_length_and_logs_on_cpu(tiny_models, corpus, tmp_path, capsys):
    """The mechanism on CPU: a memory budget stands in for a GPU; the plan reaches TRL's arguments."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from training.sft import build_sft_trainer
    from training.train_config import load_config

    root = Path(__file__).resolve().parents[1]
    base = [f"model={tiny_models['omni']}", f"corpus={corpus}", f"output_dir={tmp_path}",
            "activation_checkpointing=null", "sft.per_device_train_batch_size=4", "sft.gradient_accumulation_steps=2"]
    roomy = build_sft_trainer(load_config(root / "configs/train/tiny.yaml", base + ["memory_budget_gib=64"]),
                              str(tiny_models["omni"]), tmp_path / "roomy")
    assert (roomy.args.activation_checkpointing, roomy.args.per_device_train_batch_size) == (False, 4)
    assert isinstance(roomy._get_train_sampler(), LengthGroupedSampler)
    tight = build_sft_trainer(load_config(root / "configs/train/tiny.yaml", base + ["memory_budget_gib=0.02"]),
                              str(tiny_models["omni"]), tmp_path / "tight")
    assert tight.args.activation_checkpointing and tight.args.per_device_train_batch_size < 4
    assert tight.args.per_device_train_batch_size * tight.args.gradient_accumulation_steps == 8
    plan = json.loads((tmp_path / "tight" / "memory_plan.json").read_text())
    assert plan["micro_batch"] == tight.args.per_device_train_batch_size
    assert "[sft] memory plan: micro-batch" in capsys.readouterr().out
