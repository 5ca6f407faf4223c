"""Frozen encoders run once and stay out of backward (tiny students of both families, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from student.inputs import MEDIA_KEYS, StudentSample, build_inputs
from tests.conftest import STUDENT_FAMILIES
from training.encoders import EncodedMedia, count_encodings, enable_encoded_audio, encode_media, encoded_kwargs
from training.train_config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


@pytest.fixture(scope="module", params=STUDENT_FAMILIES)
def student(request, tiny_models):
    from transformers import AutoProcessor

    from student.family import family_of

    path = request.getfixturevalue("tiny_qwen3_omni") if request.param == "qwen3-omni" else tiny_models["omni"]
    model = family_of(path).thinker_class().from_pretrained(path).eval()
    assert family_of(model).name == request.param
    enable_encoded_audio(model)
    return model, AutoProcessor.from_pretrained(path)


def _sample(seed: int, still: bool = False, seconds: float = 10.0) -> StudentSample:
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for _ in range(1 if still else 8)]
    audio = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    return StudentSample("What sounds?", ["a", "b", "c", "d"], frames, audio, frames_are_video=not still,
                         duration=None if still else seconds)


def _media(batch) -> dict:
    return {k: batch[k] for k in MEDIA_KEYS if k in batch}


def test_cached_encodings_give_the_uncached_logits_and_generations(student):
    """Aligned clips and an image + audio item, encoded one prompt at a time, fed to one batched forward."""
    model, processor = student
    samples = [_sample(0), _sample(1, seconds=6.0), _sample(2, still=True, seconds=3.0)]
    batch = build_inputs(processor, samples, ["<think>x</think><answer>A</answer>"] * 3)
    text = {k: v for k, v in batch.items() if k not in MEDIA_KEYS}
    per_prompt = [encode_media(model, _media(build_inputs(processor, [s]))) for s in samples]
    cached = encoded_kwargs(EncodedMedia.concat(per_prompt), _media(batch))
    assert set(cached["mm_encoder_outputs"]) == {"video", "image", "audio"}
    assert not {"pixel_values_videos", "pixel_values", "input_features"} & set(cached)
    with torch.no_grad(), count_encodings(model) as counts:
        uncached_logits = model(**batch).logits
        encoder_runs = dict(counts)
        cached_logits = model(**text, **cached).logits
    assert torch.equal(cached_logits, uncached_logits)
    assert counts == encoder_runs, "the cached forward ran an encoder"

    prompts = build_inputs(processor, samples)
    text = {k: v for k, v in prompts.items() if k not in MEDIA_KEYS}
    cached = encoded_kwargs(EncodedMedia.concat(per_prompt), _media(prompts))
    greedy = {"max_new_tokens": 6, "do_sample": False}
    with count_encodings(model) as counts:
        cached_tokens = model.generate(**text, **cached, **greedy)
    assert counts["visual"] == counts["audio"] == 0
    assert torch.equal(cached_tokens, model.generate(**prompts, **greedy))


def test_encoded_audio_must_match_its_placeholders(student):
    model, processor = student
    batch = build_inputs(processor, [_sample(0)])
    encoded = encode_media(model, _media(batch))
    short = EncodedMedia(encoded.video, encoded.image, (encoded.audio[0][:-1],))
    text = {k: v for k, v in batch.items() if k not in MEDIA_KEYS}
    with pytest.raises(ValueError, match="audio placeholders"):
        model(**text, **encoded_kwargs(short, _media(batch)))


def _config(model_dir, corpus, out, *overrides):
    return load_config(TINY, [f"model={model_dir}", f"corpus={corpus}", f"output_dir={out}", *overrides])


def test_grpo_with_reference_model_encodes_once_per_prompt_per_step(student_dir, corpus, tmp_path):
    """2 prompts x G=4 per step, beta > 0 (reference forward), 2 steps: 4 encodings, not 4 x 3 x 4."""
    from training.grpo import build_grpo_trainer

    config = _config(student_dir, corpus, tmp_path, "grpo.beta=0.01", "grpo.max_steps=2",
                     "grpo.per_device_train_batch_size=8", "grpo.save_steps=100")
    trainer = build_grpo_trainer(config, str(student_dir), tmp_path / "grpo")
    assert trainer.ref_model is not None
    with count_encodings(trainer.model) as policy, count_encodings(trainer.ref_model) as reference:
        trainer.train()
    assert trainer.state.global_step == 2
    assert policy["visual"] == policy["audio"] == 4, policy  # 2 prompts per step, 2 steps
    assert reference["visual"] == reference["audio"] == 0, reference
    assert policy["outputs_requiring_grad"] == 0


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_activation_checkpointing_keeps_frozen_encoders_out_of_backward(student_dir, corpus, tmp_path, stage):
    """With checkpointing on, no encoder output requires grad; the uncached path shows why it matters."""
    from training.grpo import build_grpo_trainer
    from training.sft import build_sft_trainer

    build = build_sft_trainer if stage == "sft" else build_grpo_trainer
    results = {}
    for cache in (True, False):
        out = tmp_path / f"{stage}-{cache}"
        config = _config(student_dir, corpus, out, "activation_checkpointing=true", f"encoder_cache={cache}",
                         f"{stage}.max_steps=1", f"{stage}.save_steps=100", "grpo.beta=0")
        trainer = build(config, str(student_dir), out / stage)
        assert trainer.args.activation_checkpointing and trainer.args.gradient_checkpointing
        with count_encodings(trainer.model) as counts:
            trainer.train()
        assert counts["visual"] > 0 and counts["audio"] > 0
        results[cache] = counts["outputs_requiring_grad"]
    assert results[True] == 0
    assert results[False] > 0, "checkpointing hooks no longer drag the encoders in: the check is void"


def test_old_policy_forward_reuses_the_encodings(student_dir, corpus, tmp_path):
    """num_iterations=2: one generation serves 2 steps, with an old-policy forward; still 1 encoding per prompt."""
    from training.grpo import build_grpo_trainer

    config = _config(student_dir, corpus, tmp_path, "grpo.beta=0.01", "grpo.max_steps=2", "grpo.save_steps=100")
    trainer = build_grpo_trainer(config, str(student_dir), tmp_path / "grpo")
    trainer.num_iterations = 2  # TRL's mu: generate every 2 steps, importance-sample against the old policy
    forwards: list[str] = []
    logps = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = lambda model, *a, **k: forwards.append(
        "reference" if model is trainer.ref_model else "policy") or logps(model, *a, **k)
    try:
        with count_encodings(trainer.model) as policy, count_encodings(trainer.ref_model) as reference:
            trainer.train()
    finally:
        del trainer._get_per_token_logps_and_entropies
    assert trainer.state.global_step == 2
    assert forwards.count("reference") == 1 and forwards.count("policy") == 3, forwards  # old policy + 2 losses
    assert policy["visual"] == policy["audio"] == 1 and reference["visual"] == reference["audio"] == 0, policy
