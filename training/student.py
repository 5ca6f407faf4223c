"""The student's prompt and inputs: one builder used identically by SFT, GRPO and evaluation.

The student (a Qwen2.5-Omni thinker) sees, in one user turn: the 8 frames, the audio (16 kHz mono,
up to 10 s for AVQA clips), and the question with its options in the paper's form
``<question> Choose one among the following options:(A) … (B) …`` followed by the instruction of
``prompts/student.txt`` to reason in ``<think>…</think>`` and answer with ``<answer>X</answer>``.

**The 8 frames go in as one video, not as 8 images**, because

* the video path groups frames in temporal patches of 2, so 8 frames cost 4 frame-grids of tokens;
  8 separate images each get duplicated into a 2-frame temporal patch and cost twice as many;
* a video gets TMRoPE time positions (``video_second_per_grid`` × 25 positions per second), so
  frame *k* sits at its real time in the clip, on the same time axis as the audio tokens (also 25
  per second). Separate images restart their temporal position each time and carry no order in time;
* Qwen2.5-Omni was trained on video this way, and evaluation on video benchmarks uses the same path.

The video's ``fps`` is ``len(frames) / duration`` (0.8 for 8 frames of a 10 s clip), so time
positions are right; it is set per sample (the processor takes one ``fps`` per call, so
``video_second_per_grid`` is rewritten per sample after the call: it changes positions, not token
counts). The frame size budget is passed explicitly as ``videos_kwargs={"size": …}`` because the Omni
processor's defaults override the video processor's own size: the processor's saved size, capped at
``VIDEO_MAX_PIXELS`` per frame (about 1000 video tokens for 8 frames of a 16:9 clip). A single
still image (OmniBench) goes in as an image (``frames_are_video=False``), capped at
``IMAGE_MAX_PIXELS``. Audio is cut to the Whisper window of 30 s.

Token layout for training is ``prompt_ids + completion_ids + <|im_end|>``: the prompt (with its
expanded media placeholders) is processed once, the completion is tokenized on its own, exactly as a
generated completion follows the prompt in GRPO, so the prompt length is known exactly and the label
mask is exact. Labels are ``-100`` on the prompt (when ``mask_prompt``), on padding, and always on
multimodal placeholder tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from filters.answers import format_choices
from media import AUDIO_SECONDS, SAMPLE_RATE, load_audio, load_frames
from prompts import load_prompt
from training.tiny_models import MULTIMODAL_TOKENS  # the multimodal specials, named as in Qwen2.5-Omni

PROMPT_NAME = "student"
IGNORE_INDEX = -100
VIDEO_MAX_PIXELS = 256 * 28 * 28  # per frame: 1280x720 -> 588x336 -> 252 tokens per 2 frames
IMAGE_MAX_PIXELS = 1024 * 28 * 28  # a single still: about the token budget of the 8-frame video
MAX_AUDIO_SECONDS = 30.0  # the Whisper feature window


@dataclass
class StudentSample:
    """One multiple-choice item with its media."""

    question: str
    choices: list[str]
    frames: list[Image.Image] | None = None  # 8 frames (video) or [one image]; None = no vision
    audio: np.ndarray | None = None  # 16 kHz mono float32; None = no audio
    frames_are_video: bool = True  # False for still images (OmniBench)
    duration: float | None = None  # clip seconds (sets the video fps so time positions are right)


def student_prompt(question: str, choices: Sequence[str], template: str | None = None) -> str:
    """The text of the student's user turn (``prompts/student.txt`` filled in)."""
    template = load_prompt(PROMPT_NAME) if template is None else template
    # str.replace, not str.format: questions may contain braces.
    return template.replace("{question}", question.strip()).replace("{options}", format_choices(list(choices)))


def student_messages(sample: StudentSample, system: str | None = None) -> list[dict]:
    """Chat messages: an optional system turn, then the user turn (media parts first, then text)."""
    content: list[dict[str, Any]] = []
    if sample.frames:
        if sample.frames_are_video:
            content.append({"type": "video"})
        else:
            content.extend({"type": "image"} for _ in sample.frames)
    if sample.audio is not None:
        content.append({"type": "audio"})
    content.append({"type": "text", "text": student_prompt(sample.question, sample.choices)})
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return messages + [{"role": "user", "content": content}]


def video_fps(sample: StudentSample) -> float:
    """Frames per second of the sampled frames: ``len(frames) / duration`` (10 s if unknown)."""
    duration = sample.duration if sample.duration and sample.duration > 0 else AUDIO_SECONDS
    return len(sample.frames) / duration


def _size(processor_size: Any, cap: int) -> dict[str, int]:
    longest = min(int(processor_size["longest_edge"]), cap)
    return {"shortest_edge": min(int(processor_size["shortest_edge"]), longest), "longest_edge": longest}


def media_kwargs(processor, samples: Sequence[StudentSample]) -> dict[str, Any]:
    """``images=``, ``videos=``, ``audio=`` and size kwargs for one processor call, in sample order."""
    images, videos, audio = [], [], []
    for sample in samples:
        if sample.frames:
            if sample.frames_are_video:
                videos.append(np.stack([np.asarray(f.convert("RGB")) for f in sample.frames]))
            else:
                images.extend(f.convert("RGB") for f in sample.frames)
        if sample.audio is not None:
            audio.append(np.asarray(sample.audio, dtype=np.float32)[: int(MAX_AUDIO_SECONDS * SAMPLE_RATE)])
    kwargs: dict[str, Any] = {}
    if videos:
        kwargs["videos"] = videos
        kwargs["videos_kwargs"] = {"size": _size(processor.video_processor.size, VIDEO_MAX_PIXELS),
                                   "fps": video_fps(next(s for s in samples if s.frames and s.frames_are_video)),
                                   "cap_pixels_per_frame": True}
    if images:
        kwargs["images"] = images
        kwargs["images_kwargs"] = {"size": _size(processor.image_processor.size, IMAGE_MAX_PIXELS)}
    if audio:
        kwargs["audio"] = audio
    return kwargs


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def build_inputs(processor, samples: Sequence[StudentSample], completions: Sequence[str] | None = None,
                 mask_prompt: bool = True, system: str | None = None) -> BatchFeature:
    """Model inputs for a batch of samples (and optionally their target completions).

    Without ``completions``: the generation prompt, left-padded, ready for ``model.generate``.
    With ``completions``: ``prompt + completion + <|im_end|>``, right-padded, with ``labels``
    (``-100`` on the prompt when ``mask_prompt``, on padding and on media placeholders).
    Media tensors (``pixel_values_videos``, ``video_grid_thw``, ``video_second_per_grid``,
    ``pixel_values``, ``image_grid_thw``, ``input_features``, ``feature_attention_mask``) are
    included for whichever media the samples have.
    """
    samples = list(samples)
    if completions is not None and len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
    tokenizer = processor.tokenizer
    texts = [processor.apply_chat_template(student_messages(s, system), add_generation_prompt=True, tokenize=False)
             for s in samples]
    encoded = processor(text=texts, padding=True, padding_side="left", return_tensors="pt",
                        **media_kwargs(processor, samples))
    if "video_second_per_grid" in encoded:
        temporal = processor.video_processor.temporal_patch_size
        encoded["video_second_per_grid"] = torch.tensor(
            [temporal / video_fps(s) for s in samples if s.frames and s.frames_are_video], dtype=torch.float32)
    if completions is None:
        return encoded

    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    targets = [tokenizer(with_end_of_turn(c, tokenizer), add_special_tokens=False)["input_ids"] for c in completions]
    rows = [p + t for p, t in zip(prompts, targets)]
    media_ids = set(generation_suppress_tokens(processor))
    labels = []
    for prompt, row in zip(prompts, rows):
        label = [IGNORE_INDEX if (mask_prompt and i < len(prompt)) or tok in media_ids else tok
                 for i, tok in enumerate(row)]
        labels.append(label)
    pad_id = tokenizer.pad_token_id
    encoded["input_ids"] = _pad(rows, pad_id, "right")
    encoded["attention_mask"] = _pad([[1] * len(r) for r in rows], 0, "right")
    encoded["labels"] = _pad(labels, IGNORE_INDEX, "right")
    return encoded


def with_end_of_turn(completion: str, tokenizer) -> str:
    """The completion closed by the end-of-turn token, so the student learns to stop."""
    eos = tokenizer.eos_token or "<|im_end|>"
    return completion if completion.endswith(eos) else completion + eos


def prompt_lengths(batch: BatchFeature) -> list[int]:
    """Number of prompt tokens per row of a training batch (labels masked from the left)."""
    lengths = []
    for labels, mask in zip(batch["labels"], batch["attention_mask"]):
        target = (labels != IGNORE_INDEX).nonzero()
        lengths.append(int(target[0]) if len(target) else int(mask.sum()))
    return lengths


def load_corpus_sample(row: dict, root: str | Path, vision: bool = True, audio: bool = True) -> StudentSample:
    """A ``StudentSample`` from a corpus row (``frames``/``audio`` paths relative to ``root``).

    ``vision=False`` / ``audio=False`` drop a modality (ablations, text-only training).
    """
    root = Path(root)
    frames = load_frames([root / p for p in row["frames"]]) if vision and _present(row.get("frames")) else None
    samples = load_audio(root / row["audio"]) if audio and row.get("audio") else None
    duration = row.get("duration")
    return StudentSample(
        question=str(row["question"]),
        choices=[str(c) for c in row["choices"]],
        frames=frames,
        audio=samples,
        frames_are_video=frames is None or len(frames) > 1,
        duration=float(duration) if duration is not None and np.isfinite(duration) else None,
    )


def _present(value: Any) -> bool:
    return value is not None and len(value) > 0


def generation_suppress_tokens(processor) -> list[int]:
    """Ids of the multimodal special tokens in this processor's vocabulary (never to be sampled)."""
    tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    vocab = tokenizer.get_vocab()
    keep = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    ids = {vocab[t] for t in MULTIMODAL_TOKENS if t in vocab}
    for name in ("image_token_id", "audio_token_id", "video_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    return sorted(ids - keep)
