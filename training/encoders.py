"""Frozen media encoders run once, their outputs fed to every forward that needs them.

The student's vision and audio encoders are frozen (the paper's setting), so their outputs for a
prompt never change within a step. ``encode_media`` runs them once, under ``torch.no_grad`` (so no
encoder output ever requires grad, whatever gradient checkpointing hooks are installed), and
``encoded_kwargs`` turns the result into forward/``generate`` kwargs that skip the encoders (for
every student family of ``student.family``):

* images and videos use transformers' own hook, ``mm_encoder_outputs={"image": …, "video": …}``
  (with Qwen3-Omni's ``deepstack_features``, kept per item like the pooled outputs);
* audio has no such hook (the thinker runs its audio tower whenever ``input_features`` is given), so
  the outputs ride under ``mm_encoder_outputs["audio"]`` and a forward pre-hook on the thinker's
  inner model (``enable_encoded_audio``, the one wrapper this needs) scatters them into
  ``inputs_embeds`` at the ``<|AUDIO|>`` placeholders exactly as the model itself would, and drops
  ``input_features``. ``feature_attention_mask`` stays in the kwargs: positions need the lengths.

Log-probs through this path equal the uncached ones (``tests/test_encoders.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from student.family import family_of
from student.inputs import MEDIA_KEYS

ENCODER_INPUT_KEYS = ("pixel_values_videos", "pixel_values", "input_features")  # replaced by encoder outputs
_HOOK_FLAG = "_avrt_encoded_audio_hook"


@dataclass
class EncodedMedia:
    """Encoder outputs of some samples, one tensor (tokens × hidden) per video, image and audio, in order."""

    video: tuple[torch.Tensor, ...] = ()
    image: tuple[torch.Tensor, ...] = ()
    audio: tuple[torch.Tensor, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # encodings run: videos, images, audios
    # Qwen3-Omni: per video / image, its deepstack features (one tensor per chosen vision layer).
    video_deepstack: tuple[tuple[torch.Tensor, ...], ...] = ()
    image_deepstack: tuple[tuple[torch.Tensor, ...], ...] = ()

    @staticmethod
    def concat(parts: Sequence[EncodedMedia]) -> EncodedMedia:
        """The outputs of several samples, in sample order (as their media tensors are collated)."""
        def join(name: str) -> tuple:
            return tuple(t for p in parts for t in getattr(p, name))

        return EncodedMedia(video=join("video"), image=join("image"), audio=join("audio"),
                            video_deepstack=join("video_deepstack"), image_deepstack=join("image_deepstack"))


def thinker(model):
    """The thinker (``Qwen2_5OmniThinkerForConditionalGeneration``, ...) inside a (possibly wrapped) model."""
    while not hasattr(model, "get_audio_features") and hasattr(model, "module"):
        model = model.module
    return model


@torch.no_grad()
def encode_media(model, media: dict[str, torch.Tensor]) -> EncodedMedia:
    """Run the vision and audio encoders once on ``media`` (collated processor outputs), without grad."""
    model = thinker(model)
    family = family_of(model)
    device = next(model.parameters()).device
    media = {k: v.to(device) for k, v in media.items()}
    video = image = audio = video_deepstack = image_deepstack = ()
    if "pixel_values_videos" in media:
        out = model.get_video_features(media["pixel_values_videos"], media["video_grid_thw"], return_dict=True)
        video, video_deepstack = tuple(out.pooler_output), _per_item(getattr(out, "deepstack_features", None))
    if "pixel_values" in media:
        out = model.get_image_features(media["pixel_values"], media["image_grid_thw"], return_dict=True)
        image, image_deepstack = tuple(out.pooler_output), _per_item(getattr(out, "deepstack_features", None))
    if "input_features" in media:
        mask = media["feature_attention_mask"]
        hidden = model.get_audio_features(media["input_features"], mask, return_dict=True).last_hidden_state
        lengths = family.audio_output_lengths(model, mask.sum(-1))
        audio = tuple(torch.split(hidden, lengths.tolist()))
    return EncodedMedia(video, image, audio, {"videos": len(video), "images": len(image), "audios": len(audio)},
                        video_deepstack=video_deepstack, image_deepstack=image_deepstack)


def _per_item(deepstack) -> tuple[tuple[torch.Tensor, ...], ...]:
    """``[layer][item]`` deepstack features (as the model returns them) -> ``[item][layer]``."""
    return tuple(zip(*deepstack)) if deepstack else ()


def _vision_output(pooled: tuple[torch.Tensor, ...], deepstack: tuple[tuple[torch.Tensor, ...], ...]):
    """What the model's own ``get_*_features`` returns, rebuilt from per-item outputs."""
    if not deepstack:
        return BaseModelOutputWithPooling(pooler_output=pooled)
    layers = [tuple(item[layer] for item in deepstack) for layer in range(len(deepstack[0]))]
    return BaseModelOutputWithDeepstack(pooler_output=pooled, deepstack_features=layers)


@dataclass
class BaseModelOutputWithDeepstack(BaseModelOutputWithPooling):
    """Pooled vision outputs plus Qwen3-Omni's per-layer ``deepstack_features`` (read by its forward)."""

    deepstack_features: list | None = None


def encoded_kwargs(encoded: EncodedMedia, media: dict[str, torch.Tensor],
                   device: torch.device | str | None = None) -> dict[str, Any]:
    """Forward kwargs: ``media`` without the encoder inputs, plus ``mm_encoder_outputs`` from ``encoded``."""
    kwargs = {k: (v.to(device) if device is not None else v) for k, v in media.items()
              if k in MEDIA_KEYS and k not in ENCODER_INPUT_KEYS}
    outputs: dict[str, Any] = {}
    if encoded.video:
        outputs["video"] = _vision_output(encoded.video, encoded.video_deepstack)
    if encoded.image:
        outputs["image"] = _vision_output(encoded.image, encoded.image_deepstack)
    if encoded.audio:
        outputs["audio"] = torch.cat(encoded.audio, dim=0)
    if outputs:
        kwargs["mm_encoder_outputs"] = outputs
    return kwargs


def _scatter_encoded_audio(module, args, kwargs):
    """Forward pre-hook of the thinker's inner model: audio encoder outputs -> ``inputs_embeds``."""
    outputs = kwargs.get("mm_encoder_outputs")
    if not outputs or "audio" not in outputs:
        return None
    audio = outputs["audio"]
    kwargs["mm_encoder_outputs"] = {k: v for k, v in outputs.items() if k != "audio"}
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("encoded audio needs input_ids to find its placeholders")
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        embeds = module.get_input_embeddings()(input_ids)
    mask = (input_ids == module.config.audio_token_id).unsqueeze(-1)
    if int(mask.sum()) != audio.shape[0]:
        raise ValueError(f"{int(mask.sum())} audio placeholders for {audio.shape[0]} encoded audio tokens")
    kwargs["inputs_embeds"] = embeds.masked_scatter(mask.to(embeds.device), audio.to(embeds.device, embeds.dtype))
    kwargs["input_features"] = None
    return args, kwargs


def enable_encoded_audio(model) -> None:
    """Let ``model`` take audio encoder outputs under ``mm_encoder_outputs["audio"]`` (idempotent)."""
    inner = thinker(model).model
    if not getattr(inner, _HOOK_FLAG, False):
        inner.register_forward_pre_hook(_scatter_encoded_audio, with_kwargs=True)
        setattr(inner, _HOOK_FLAG, True)


@contextmanager
def count_encodings(model) -> Iterator[Counter]:
    """Count media items the encoders see (``visual``: images + videos, ``audio``) and grad-carrying outputs.

    Yields a ``Counter`` with ``visual``, ``audio`` (items encoded) and ``outputs_requiring_grad``.
    """
    inner = thinker(model).model
    counts: Counter = Counter()

    def visual(module, args, kwargs):
        counts["visual"] += int(kwargs["grid_thw"].shape[0])

    def audio(module, args, kwargs):
        counts["audio"] += int(kwargs["feature_lens"].shape[0])

    def output(module, args, kwargs, out):
        tensor = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state
        counts["outputs_requiring_grad"] += int(tensor.requires_grad)

    hooks = [inner.visual.register_forward_pre_hook(visual, with_kwargs=True),
             inner.audio_tower.register_forward_pre_hook(audio, with_kwargs=True),
             inner.visual.register_forward_hook(output, with_kwargs=True),
             inner.audio_tower.register_forward_hook(output, with_kwargs=True)]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()
