"""The tiny offline models: deterministic, reloadable, and the student runs on 10 s of audio + 8 frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration, Qwen2ForCausalLM

from training.tiny_models import MULTIMODAL_TOKENS, build_text


@pytest.fixture(scope="module")
def student(tiny_models):
    processor = AutoProcessor.from_pretrained(tiny_models["omni"])
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_models["omni"]).eval()
    return processor, model


def test_chat_template_renders_audio_image_and_video(student):
    processor, _ = student
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "image"}, {"type": "video"},
                                             {"type": "text", "text": "Which?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|IMAGE|><|vision_eos|>"
                    "<|vision_bos|><|VIDEO|><|vision_eos|>Which?<|im_end|>\n<|im_start|>assistant\n")


def test_forward_and_generate_with_ten_seconds_of_audio_and_eight_frames(student):
    processor, model = student
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(160_000)).astype(np.float32)  # 10 s at 16 kHz
    frames = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(8)]
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "video"}, {"type": "text", "text": "Q?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[audio], videos=[frames], return_tensors="pt",
                       videos_kwargs={"fps": 0.8, "size": {"shortest_edge": 3136, "longest_edge": 12544}})
    assert int(inputs["feature_attention_mask"].sum()) == 1000  # 10 s of 10 ms Whisper frames
    assert inputs["video_grid_thw"].tolist()[0][0] == 4  # 8 frames in temporal patches of 2
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # the audio reaches the output: other audio, other logits
    other = processor(text=[text], audio=[audio[::-1].copy()], videos=[frames], return_tensors="pt",
                      videos_kwargs={"fps": 0.8, "size": {"shortest_edge": 3136, "longest_edge": 12544}})
    with torch.no_grad():
        assert not torch.allclose(model(**other).logits[0, -1], logits[0, -1])


def test_models_are_deterministic_from_the_seed(tmp_path, tiny_models):
    again = build_text(tmp_path / "text", seed=0)
    first = Qwen2ForCausalLM.from_pretrained(tiny_models["text"]).state_dict()
    second = Qwen2ForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    assert all(tokenizer.convert_tokens_to_ids(t) != tokenizer.unk_token_id for t in MULTIMODAL_TOKENS)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_omni_3b_shape_preset_has_the_published_sizes(tmp_path):
    """The real-size builder's config (weights are not built here: about 4 GB with 2 text layers)."""
    from training.tiny_models import build_processor, build_tokenizer, thinker_config

    tokenizer = build_tokenizer(tmp_path)
    config = thinker_config(tokenizer, "omni-3b-shape", text_layers=2)
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size) == (2048, 2, 16, 2, 11008, 151936)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24] and text.hidden_size // text.num_attention_heads == 128
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.window_size,
            vision.fullatt_block_indexes, vision.out_hidden_size) == (32, 1280, 3420, 112, [7, 15, 23, 31], 2048)
    assert (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim,
            audio.n_window, audio.num_mel_bins, audio.output_dim) == (1280, 32, 20, 5120, 100, 128, 2048)
    assert thinker_config(tokenizer, "omni-3b-shape").text_config.num_hidden_layers == 36
    processor = build_processor(tokenizer, "omni-3b-shape")
    assert processor.feature_extractor.chunk_length == 300  # as released: the student must not pad to it
    assert processor.video_processor.size == {"shortest_edge": 3136, "longest_edge": 12845056}


def test_the_random_audio_encoder_passes_a_tones_pitch_on(student):
    """A 220 Hz and a 1760 Hz tone (the demo's low and high) come out of the fresh audio encoder as
    far apart as a pretrained one would put them (at the config's init std, 0.02, they were at cosine
    0.9998, and the demo's student learned the pitch late or never)."""
    processor, model = student
    t = np.arange(3 * 16_000) / 16_000

    def encoded(hz: float) -> torch.Tensor:
        features = processor.feature_extractor(0.4 * np.sin(2 * np.pi * hz * t).astype(np.float32), sampling_rate=16_000,
                                               return_attention_mask=True, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            out = model.get_audio_features(features["input_features"], feature_attention_mask=features["attention_mask"])
        return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out).mean(0)

    low, high = encoded(220.0), encoded(1760.0)
    assert torch.nn.functional.cosine_similarity(low, high, dim=0) < 0.95


def test_the_tiny_folder_records_its_builder_version(tmp_path, monkeypatch):
    from training import tiny_models

    assert not tiny_models.built_by_this_version(tmp_path)
    monkeypatch.setattr(tiny_models, "build_omni", lambda out, *a, **k: out)
    monkeypatch.setattr(tiny_models, "build_text", lambda out, *a, **k: out)
    tiny_models.build_all(tmp_path, seed=0)
    assert tiny_models.built_by_this_version(tmp_path) and not tiny_models.built_by_this_version(tmp_path, seed=1)
    monkeypatch.setattr(tiny_models, "BUILDER_VERSION", tiny_models.BUILDER_VERSION + 1)
    assert not tiny_models.built_by_this_version(tmp_path)  # a newer builder rebuilds
