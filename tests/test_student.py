"""The student prompt and input builder shared by SFT, GRPO and evaluation (tiny Omni processor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from student.inputs import (
    IGNORE_INDEX,
    StudentSample,
    build_inputs,
    generation_suppress_tokens,
    load_corpus_sample,
    student_messages,
    student_prompt,
)
from tests.conftest import assert_positions_are_the_models, prompt_lengths


@pytest.fixture(scope="module")
def processor(tiny_models):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_models["omni"])


def _frames(n: int = 8, colour: int = 0, size=(120, 160)) -> list[Image.Image]:
    rng = np.random.default_rng(colour)
    return [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def _audio(seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _av(seconds: float = 10.0) -> StudentSample:
    return StudentSample("What colour is the screen?", ["red", "green", "blue", "yellow"], _frames(), _audio(seconds),
                         duration=seconds)


def test_prompt_has_paper_option_form_and_answer_instruction():
    text = student_prompt("What {odd} thing sounds?", ["a dog", "a cat", "rain", "wind"])
    assert text.startswith("What {odd} thing sounds? Choose one among the following options:(A) a dog (B) a cat (C) rain (D) wind")
    assert "<think>" in text and "</think>" in text and "<answer>" in text and "</answer>" in text


def test_messages_order_media_before_text():
    sample = _av()
    (user,) = student_messages(sample)
    assert [p["type"] for p in user["content"]] == ["video", "text"], "aligned: the audio rides inside the video"
    (user,) = student_messages(sample, layout="separate")
    assert [p["type"] for p in user["content"]] == ["video", "audio", "text"]
    still = StudentSample("q", ["a", "b"], _frames(1), None, frames_are_video=False)
    assert [p["type"] for p in student_messages(still)[0]["content"]] == ["image", "text"]
    text_only = StudentSample("q", ["a", "b"])
    assert [p["type"] for p in student_messages(text_only)[0]["content"]] == ["text"]
    assert student_messages(text_only, system="S")[0]["role"] == "system"


def test_prompt_inputs_carry_video_audio_and_time(processor):
    tok = processor.tokenizer
    samples = [_av(10.0), StudentSample("q?", ["a", "b", "c", "d"], _frames(colour=1), None, duration=5.0)]
    batch = build_inputs(processor, samples)
    assert batch["attention_mask"][:, -1].all(), "generation prompts are left-padded"
    grid = batch["video_grid_thw"]
    assert grid[:, 0].tolist() == [4, 4], "8 frames form 4 temporal patches of 2 (a video, not 8 images)"
    # time per temporal patch = 2 frames / (8 frames / duration)
    assert batch["video_second_per_grid"].tolist() == pytest.approx([2.5, 1.25])
    ids = batch["input_ids"]
    video_tokens = (ids == tok.convert_tokens_to_ids("<|VIDEO|>")).sum(1)
    assert video_tokens.tolist() == (grid.prod(1) // 4).tolist()
    assert batch["input_features"].shape[0] == 1, "only the first sample has audio"
    audio_tokens = (ids[0] == tok.convert_tokens_to_ids("<|AUDIO|>")).sum().item()
    assert audio_tokens == 250  # 10 s -> 1000 mel frames -> 250 audio tokens
    assert (ids[1] == tok.convert_tokens_to_ids("<|AUDIO|>")).sum().item() == 0


def test_still_image_goes_in_as_image(processor):
    sample = StudentSample("q?", ["a", "b", "c", "d"], _frames(1), _audio(3.0), frames_are_video=False)
    batch = build_inputs(processor, [sample])
    assert "pixel_values" in batch and "pixel_values_videos" not in batch


def test_labels_cover_exactly_the_completion(processor):
    tok = processor.tokenizer
    samples = [_av(), StudentSample("Short?", ["x", "y", "z", "w"], None, _audio(2.0))]
    completions = ["<think>The screen is red.</think><answer>A</answer>", "<think>hm</think><answer>C</answer>"]
    prompt_only = build_inputs(processor, samples)
    batch = build_inputs(processor, samples, completions)
    lengths = prompt_lengths(batch)
    for row, (completion, n_prompt) in enumerate(zip(completions, lengths)):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        assert tok.decode(labels[labels != IGNORE_INDEX]) == completion + tok.eos_token
        # the training prompt is token for token the generation prompt
        gen = prompt_only["input_ids"][row][prompt_only["attention_mask"][row].bool()]
        assert torch.equal(ids[:n_prompt], gen)
        # padding is never a target
        assert (labels[batch["attention_mask"][row] == 0] == IGNORE_INDEX).all()
    assert batch["attention_mask"][:, 0].all(), "training batches are right-padded"


def test_unmasked_prompt_never_targets_media_tokens(processor):
    batch = build_inputs(processor, [_av()], ["<think>t</think><answer>B</answer>"], mask_prompt=False)
    media = torch.tensor(generation_suppress_tokens(processor))
    labels = batch["labels"][0]
    assert not torch.isin(labels, media).any()
    ids = batch["input_ids"][0]
    assert torch.equal(labels != IGNORE_INDEX, ~torch.isin(ids, media)), "all prompt text is a target"


def test_tiny_student_forward_with_labels(processor, tiny_models):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_models["omni"])
    batch = build_inputs(processor, [_av()], ["<think>red</think><answer>A</answer>"])
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_suppress_tokens_are_the_media_specials(processor):
    tok = processor.tokenizer
    ids = generation_suppress_tokens(processor)
    names = set(tok.convert_ids_to_tokens(ids))
    assert {"<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>", "<|audio_bos|>", "<|vision_bos|>"} <= names
    assert tok.eos_token_id not in ids and tok.pad_token_id not in ids


def test_load_corpus_sample(tmp_path):
    from media import save_audio, save_frames

    frames = np.stack([np.full((48, 64, 3), i * 20, np.uint8) for i in range(8)])
    paths = save_frames(frames, tmp_path / "frames" / "s0")
    save_audio(_audio(4.0), tmp_path / "audio" / "s0.wav")
    row = {"question": "Q?", "choices": np.array(["a", "b", "c", "d"]), "answer": "B",
           "frames": [str(p.relative_to(tmp_path)) for p in paths], "audio": "audio/s0.wav", "duration": 4.0}
    sample = load_corpus_sample(row, tmp_path)
    assert len(sample.frames) == 8 and sample.frames_are_video and sample.frames[0].size == (64, 48)
    assert sample.audio.dtype == np.float32 and len(sample.audio) == 64000
    assert sample.choices == ["a", "b", "c", "d"] and sample.duration == 4.0
    blind = load_corpus_sample(row, tmp_path, vision=False, audio=False)
    assert blind.frames is None and blind.audio is None


def _times(batch, row: int, token: str, processor) -> torch.Tensor:
    ids = batch["input_ids"][row]
    return batch["position_ids"][0, row][ids == processor.tokenizer.convert_tokens_to_ids(token)]


def test_aligned_clip_puts_audio_and_frames_of_one_second_at_one_time(processor):
    """TMRoPE time of the frames at t s equals that of the audio token at t s (25 per second)."""
    batch = build_inputs(processor, [_av(10.0)])
    ids = batch["input_ids"][0].tolist()
    tok = processor.tokenizer
    bos = ids.index(tok.convert_tokens_to_ids("<|vision_bos|>"))
    assert ids[bos + 1] == tok.convert_tokens_to_ids("<|audio_bos|>"), "video-with-sound layout"
    video, audio = _times(batch, 0, "<|VIDEO|>", processor), _times(batch, 0, "<|AUDIO|>", processor)
    start = int(audio[0])
    assert len(audio) == 250 and torch.equal(audio, torch.arange(start, start + 250)), "25 positions per second"
    per_grid = float(batch["video_second_per_grid"][0])  # 2.5 s per temporal patch of 2 frames
    for k, t in enumerate(sorted(set(video.tolist()))):
        second = k * per_grid
        assert t == int(audio[int(second * 25)]), f"frames at {second} s and audio at {second} s differ in time"
    # tokens are interleaved in 2 s chunks: audio of 0-2 s comes before the frames at 2.5 s
    first_late_frame = next(i for i, p in enumerate(batch["position_ids"][0, 0].tolist())
                            if ids[i] == tok.convert_tokens_to_ids("<|VIDEO|>") and p >= start + 50)
    assert ids.index(tok.convert_tokens_to_ids("<|AUDIO|>")) < first_late_frame

    separate = build_inputs(processor, [_av(10.0)], layout="separate")
    assert _times(separate, 0, "<|AUDIO|>", processor)[0] > _times(separate, 0, "<|VIDEO|>", processor).max(), \
        "separate parts: the audio starts after the whole video"


def test_positions_are_the_models_and_per_row_in_mixed_batches(processor, tiny_models):
    """Each row's positions equal the model's rope index for that row alone with its own layout."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_models["omni"])
    still = StudentSample("q?", ["a", "b", "c", "d"], _frames(1), _audio(3.0), frames_are_video=False)
    silent = StudentSample("q?", ["a", "b", "c", "d"], _frames(colour=2), None, duration=10.0)
    long_clip = StudentSample("q?", ["a", "b", "c", "d"], _frames(colour=3), _audio(10.0), duration=60.0)
    samples = [_av(10.0), still, silent, long_clip, StudentSample("q?", ["a", "b"])]
    aligned = [True, False, False, False, False]  # a 60 s clip with its centred 10 s of audio is not aligned
    for completions in (None, ["<think>t</think><answer>A</answer>"] * len(samples)):
        batch = assert_positions_are_the_models(model, processor, samples, aligned, completions)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_audio_features_are_not_padded_to_the_extractor_window(processor):
    """The released processor pads to chunk_length=300 s; the student's features stop at the clip window."""
    import copy

    released = copy.deepcopy(processor)
    extractor = released.feature_extractor
    extractor.chunk_length, extractor.n_samples = 300, 300 * 16000
    extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    short = build_inputs(released, [_av(10.0)])
    assert short["input_features"].shape[-1] == 1000 and short["feature_attention_mask"].all()
    mixed = build_inputs(released, [_av(4.0), StudentSample("q?", ["a", "b"], None, _audio(14.0))])
    assert mixed["input_features"].shape[-1] == 1400, "padded to the longest audio of the batch"
    assert mixed["feature_attention_mask"].sum(-1).tolist() == [400, 1400]
