"""The student's prompt and inputs: one builder used identically by SFT, GRPO and evaluation.

The student (a Qwen2.5-Omni or Qwen3-Omni thinker: ``student.family`` holds what differs)
sees, in one user turn: the 8 frames, the audio (16 kHz mono,
up to 10 s for AVQA clips), and the question with its options in the paper's form
``<question> Choose one among the following options:(A) … (B) …`` followed by the instruction of
``prompts/student.txt`` to reason in ``<think>…</think>`` and answer with ``<answer>X</answer>``.

**The 8 frames go in as one video, not as 8 images**: the video path groups frames in temporal
patches of 2 (8 frames cost 4 frame-grids of tokens; 8 images would cost twice as many), and a video
gets TMRoPE time positions (``video_second_per_grid`` × 25 positions per second), so frame *k* sits
at its real time in the clip. Its ``fps`` is ``len(frames) / duration`` (0.8 for 8 frames of a 10 s
clip), set per sample (each sample is processed on its own).

**Audio and frames of a clip share one time axis** (``layout="aligned"``, the default): the clip's
audio rides inside the video in Qwen2.5-Omni's video-with-sound layout
(``<|vision_bos|><|audio_bos|>`` frames and audio interleaved in 2 s chunks
``<|audio_eos|><|vision_eos|>``, the processor's ``load_audio_from_video``), and the rope index gives
audio token *j* (25 per second) and the frames of the same second the same time position (Qwen3-Omni:
the same video-with-sound layout, frames and audio tokens ordered by time at 13 positions per second). This is
used when the audio covers the clip (its length ≥ the clip duration − 0.5 s, or the duration is
unknown); otherwise, and with ``layout="separate"``, the audio is its own part after the video and
gets text-like positions *after* the whole video block (no time alignment). A single still image
(OmniBench) always goes in as an image part followed by a separate audio part.

Because the model's own position computation takes one ``use_audio_in_video`` flag per batch,
``build_inputs`` computes ``position_ids`` (3 × batch × length) row by row with the model's own
``get_rope_index`` and the row's own layout, and returns them with the batch: mixed batches (aligned
clips next to image + audio items or clips whose audio was dropped) get the right positions in SFT,
GRPO and ``generate``.

Frame size: ``videos_kwargs={"size": …}`` is passed explicitly because the Omni processor's defaults
override the video processor's own size: the processor's saved size capped at ``VIDEO_MAX_PIXELS``
per frame (about 1000 video tokens for 8 frames of a 16:9 clip); a still image is capped at
``IMAGE_MAX_PIXELS``. Audio is cut to the Whisper window of 30 s and its features are padded only to
``max(AUDIO_SECONDS, longest audio of the batch)``, not to the feature extractor's ``chunk_length``
(300 s for the released processor: 15 MB of zeros per row).

Token layout for training is ``prompt_ids + completion_ids + <|im_end|>``: the prompt (with its
expanded media placeholders) is processed once, the completion is tokenized on its own, exactly as a
generated completion follows the prompt in GRPO, so the prompt length is known exactly and the label
mask is exact. Labels are ``-100`` on the prompt (when ``mask_prompt``), on padding, and always on
multimodal placeholder tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MethodType, SimpleNamespace
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from filters.answers import LETTERS, format_choices
from media import AUDIO_SECONDS, SAMPLE_RATE, load_audio, load_frames
from prompts import STUDENT_PROMPT, load_prompt
from student.family import ALL_MULTIMODAL_TOKENS, family_of

# Qwen2.5-Omni's multimodal special tokens: a student must never sample them (TRL only suppresses
# the image token). Every family's are in ``student.family``.
MULTIMODAL_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                     "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>")
PROMPT_NAME = STUDENT_PROMPT
IGNORE_INDEX = -100
VIDEO_MAX_PIXELS = 256 * 28 * 28  # per frame: 1280x720 -> 588x336 -> 252 tokens per 2 frames
IMAGE_MAX_PIXELS = 1024 * 28 * 28  # a single still: about the token budget of the 8-frame video
MAX_AUDIO_SECONDS = 30.0  # the Whisper feature window
# Processor outputs that describe a sample's media (everything but the token ids and masks).
MEDIA_KEYS = ("input_features", "feature_attention_mask", "pixel_values_videos", "video_grid_thw",
              "video_second_per_grid", "pixel_values", "image_grid_thw")


@dataclass
class StudentSample:
    """One multiple-choice item with its media."""

    question: str
    choices: list[str]
    frames: list[Image.Image] | None = None  # 8 frames (video) or [one image]; None = no vision
    audio: np.ndarray | None = None  # 16 kHz mono float32; None = no audio
    frames_are_video: bool = True  # False for still images (OmniBench)
    duration: float | None = None  # clip seconds (sets the video fps so time positions are right)
    prompt: str = PROMPT_NAME  # the template of the user turn's text: a file of prompts/ or a path (recipes)


def option_lines(choices: Sequence[str]) -> str:
    """``A. first`` / ``B. second`` on lines of their own (EchoInk-R1's option list)."""
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))


# What a prompt template may hold: the question, and the options written one of three ways.
PLACEHOLDERS: dict[str, Callable[[Sequence[str]], str]] = {
    "{options}": format_choices,  # (A) first (B) second: the AVRT paper's form
    "{option_lines}": option_lines,  # A. first\nB. second: EchoInk-R1's
    "{option_list}": lambda choices: str([str(c) for c in choices]),  # ['first', 'second']: R1-AQA's (Omni-R1)
}


def student_prompt(question: str, choices: Sequence[str], template: str = PROMPT_NAME) -> str:
    """The text of the student's user turn: the prompt file ``template`` (``prompts/student.txt`` by
    default; a recipe names its own) with the question and the options filled in."""
    text = load_prompt(template).replace("{question}", question.strip())
    # str.replace, not str.format: questions may contain braces
    for placeholder, render in PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, render(list(choices)))
    return text


Layout = Literal["aligned", "separate"]
LAYOUTS: tuple[str, ...] = ("aligned", "separate")
ALIGN_TOLERANCE_S = 0.5  # audio this much shorter than the clip still counts as the clip's own


def is_aligned(sample: StudentSample, layout: Layout = "aligned") -> bool:
    """Whether the sample's audio goes inside its video on one time axis (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {LAYOUTS}")
    if layout != "aligned" or not sample.frames or not sample.frames_are_video or sample.audio is None:
        return False
    audio_s = min(len(sample.audio) / SAMPLE_RATE, MAX_AUDIO_SECONDS)
    return sample.duration is None or audio_s >= sample.duration - ALIGN_TOLERANCE_S


def student_messages(sample: StudentSample, system: str | None = None, layout: Layout = "aligned") -> list[dict]:
    """Chat messages: an optional system turn, then the user turn (media parts first, then text).

    An aligned clip has a single video part (its audio is added inside the video by the processor).
    """
    content: list[dict[str, Any]] = []
    if sample.frames:
        if sample.frames_are_video:
            content.append({"type": "video"})
        else:
            content.extend({"type": "image"} for _ in sample.frames)
    if sample.audio is not None and not is_aligned(sample, layout):
        content.append({"type": "audio"})
    content.append({"type": "text", "text": student_prompt(sample.question, sample.choices, sample.prompt)})
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return messages + [{"role": "user", "content": content}]


def video_fps(sample: StudentSample) -> float:
    """Frames per second of the sampled frames: ``len(frames) / duration`` (10 s if unknown)."""
    duration = sample.duration if sample.duration and sample.duration > 0 else AUDIO_SECONDS
    return len(sample.frames) / duration


def _size(processor_size: Any, cap: int) -> dict[str, int]:
    longest = min(int(processor_size["longest_edge"]), cap)
    return {"shortest_edge": min(int(processor_size["shortest_edge"]), longest), "longest_edge": longest}


def _clip_audio(audio: np.ndarray) -> np.ndarray:
    return np.asarray(audio, dtype=np.float32)[: int(MAX_AUDIO_SECONDS * SAMPLE_RATE)]


def audio_feature_samples(samples: Sequence[StudentSample]) -> int:
    """Samples the audio features are padded to: ``max(AUDIO_SECONDS, longest audio)``, at most 30 s."""
    longest = max((len(_clip_audio(s.audio)) for s in samples if s.audio is not None), default=0)
    return max(int(AUDIO_SECONDS * SAMPLE_RATE), longest)


def frame_kwargs(processor, sample: StudentSample) -> dict[str, Any]:
    """Frame size (and ``fps`` and the per-frame pixel cap of a video) for processing one sample's frames;
    a served student is sent the same as ``mm_processor_kwargs`` (``student.served.processor_kwargs``)."""
    if sample.frames_are_video:
        return {"size": _size(processor.video_processor.size, VIDEO_MAX_PIXELS), "fps": video_fps(sample),
                "cap_pixels_per_frame": True}
    return {"size": _size(processor.image_processor.size, IMAGE_MAX_PIXELS)}


def media_kwargs(processor, sample: StudentSample, layout: Layout = "aligned",
                 audio_samples: int | None = None) -> dict[str, Any]:
    """``images=``, ``videos=``, ``audio=`` and their kwargs for processing one sample."""
    kwargs: dict[str, Any] = {}
    if sample.frames and sample.frames_are_video:
        kwargs["videos"] = [np.stack([np.asarray(f.convert("RGB")) for f in sample.frames])]
        kwargs["videos_kwargs"] = frame_kwargs(processor, sample)
    elif sample.frames:
        kwargs["images"] = [f.convert("RGB") for f in sample.frames]
        kwargs["images_kwargs"] = frame_kwargs(processor, sample)
    if sample.audio is not None:
        kwargs["audio"] = [_clip_audio(sample.audio)]
        kwargs["audio_kwargs"] = {"max_length": audio_samples or audio_feature_samples([sample])}
        if is_aligned(sample, layout):
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = [0]
    return kwargs


def rope_positions(processor, input_ids: torch.Tensor, media: dict[str, torch.Tensor], aligned: bool) -> torch.Tensor:
    """TMRoPE positions ``(3, len)`` of one unpadded row, by the model's own ``get_rope_index``.

    ``media`` holds that row's ``video_grid_thw``, ``video_second_per_grid``, ``image_grid_thw`` and
    ``feature_attention_mask`` (whichever it has); the token ids and time constants come from the
    processor, which shares them with the model config; the layout is the processor's family's
    (``student.family``).
    """
    family = family_of(processor)
    Omni = family.rope_index_owner()
    index = SimpleNamespace(config=family.rope_config(processor), spatial_merge_size=processor.video_processor.merge_size)
    index.get_llm_pos_ids_for_vision = MethodType(Omni.get_llm_pos_ids_for_vision, index)
    index.get_chunked_index = MethodType(Omni.get_chunked_index, index)
    ids = input_ids.view(1, -1)
    mask = media.get("feature_attention_mask")
    positions, _ = Omni.get_rope_index(
        index, ids, image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
        attention_mask=torch.ones_like(ids), use_audio_in_video=aligned,
        audio_seqlens=mask.sum(-1) if mask is not None else None, second_per_grids=media.get("video_second_per_grid"))
    return positions[:, 0, :]


def encode_prompt(processor, sample: StudentSample, system: str | None = None, layout: Layout = "aligned",
                  audio_samples: int | None = None) -> dict[str, torch.Tensor]:
    """One sample's generation prompt: ``input_ids`` (1-D), its media tensors and ``position_ids`` (3 × len)."""
    text = processor.apply_chat_template(student_messages(sample, system, layout), add_generation_prompt=True,
                                         tokenize=False)
    encoded = processor(text=[text], return_tensors="pt", **media_kwargs(processor, sample, layout, audio_samples))
    out = {k: encoded[k] for k in MEDIA_KEYS if k in encoded}
    if "video_second_per_grid" in out:  # float32: the processor's list becomes float64
        out["video_second_per_grid"] = torch.tensor(
            [processor.video_processor.temporal_patch_size / video_fps(sample)], dtype=torch.float32)
    out["input_ids"] = encoded["input_ids"][0]
    out["position_ids"] = rope_positions(processor, out["input_ids"], out, is_aligned(sample, layout))
    return out


def continue_positions(prompt_positions: torch.Tensor, total: int) -> torch.Tensor:
    """Positions ``(3, total)``: the prompt's, then text positions counting on from its largest."""
    extra = total - prompt_positions.shape[1]
    if extra <= 0:
        return prompt_positions[:, :total]
    tail = torch.arange(1, extra + 1, dtype=prompt_positions.dtype) + prompt_positions.max()
    return torch.cat([prompt_positions, tail.view(1, -1).expand(3, -1)], dim=1)


def pad_positions(rows: list[torch.Tensor], side: str, width: int | None = None) -> torch.Tensor:
    """Stack per-row positions ``(3, len_i)`` into ``(3, batch, width)``; padding positions are 1 (as the model's)."""
    width = width or max(r.shape[1] for r in rows)
    out = torch.ones(3, len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        n = row.shape[1]
        if side == "left":
            out[:, i, width - n:] = row
        else:
            out[:, i, :n] = row
    return out


def collate_media(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-sample media tensors (in order); audio features are zero-padded to one width."""
    out: dict[str, torch.Tensor] = {}
    for key in MEDIA_KEYS:
        tensors = [p[key] for p in parts if key in p]
        if not tensors:
            continue
        if key in ("input_features", "feature_attention_mask"):
            width = max(t.shape[-1] for t in tensors)
            tensors = [torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in tensors]
        out[key] = torch.cat(tensors, dim=0)
    return out


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def build_inputs(processor, samples: Sequence[StudentSample], completions: Sequence[str] | None = None,
                 mask_prompt: bool = True, system: str | None = None, layout: Layout = "aligned") -> BatchFeature:
    """Model inputs for a batch of samples (and optionally their target completions).

    Without ``completions``: the generation prompt, left-padded, ready for ``model.generate``.
    With ``completions``: ``prompt + completion + <|im_end|>``, right-padded, with ``labels``
    (``-100`` on the prompt when ``mask_prompt``, on padding and on media placeholders).
    Always: ``position_ids`` (3 × batch × length, per row and per layout) and the media tensors
    (``pixel_values_videos``, ``video_grid_thw``, ``video_second_per_grid``, ``pixel_values``,
    ``image_grid_thw``, ``input_features``, ``feature_attention_mask``) the samples have.
    """
    samples = list(samples)
    if completions is not None and len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
    tokenizer = processor.tokenizer
    audio_samples = audio_feature_samples(samples)
    parts = [encode_prompt(processor, s, system, layout, audio_samples) for s in samples]
    prompts = [p["input_ids"].tolist() for p in parts]
    encoded = BatchFeature(collate_media(parts))
    if completions is None:
        encoded["input_ids"] = _pad(prompts, tokenizer.pad_token_id, "left")
        encoded["attention_mask"] = _pad([[1] * len(p) for p in prompts], 0, "left")
        encoded["position_ids"] = pad_positions([p["position_ids"] for p in parts], "left")
        return encoded

    targets = [tokenizer(with_end_of_turn(c, tokenizer), add_special_tokens=False)["input_ids"] for c in completions]
    rows = [p + t for p, t in zip(prompts, targets)]
    media_ids = set(generation_suppress_tokens(processor))
    labels = []
    for prompt, row in zip(prompts, rows):
        label = [IGNORE_INDEX if (mask_prompt and i < len(prompt)) or tok in media_ids else tok
                 for i, tok in enumerate(row)]
        labels.append(label)
    encoded["input_ids"] = _pad(rows, tokenizer.pad_token_id, "right")
    encoded["attention_mask"] = _pad([[1] * len(r) for r in rows], 0, "right")
    encoded["labels"] = _pad(labels, IGNORE_INDEX, "right")
    encoded["position_ids"] = pad_positions(
        [continue_positions(p["position_ids"], len(r)) for p, r in zip(parts, rows)], "right")
    return encoded


def with_end_of_turn(completion: str, tokenizer) -> str:
    """The completion closed by the end-of-turn token, so the student learns to stop."""
    eos = tokenizer.eos_token or "<|im_end|>"
    return completion if completion.endswith(eos) else completion + eos


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
    ids = {vocab[t] for t in ALL_MULTIMODAL_TOKENS if t in vocab}
    for name in ("image_token_id", "audio_token_id", "video_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    return sorted(ids - keep)
