"""Student families: everything that differs between a Qwen2.5-Omni and a Qwen3-Omni thinker, in one place.

The trainer, the encoder cache, the prompt builder, evaluation and the export ask ``family_of(x)``
(``x``: a config, a model, a processor, a tokenizer's owner or a checkpoint directory) for

* the classes: thinker, full model and full config (``thinker_class()``, ...), and the
  ``model_type`` of a thinker and of a full checkpoint (how a family is detected);
* the multimodal special tokens (their names differ: ``<|AUDIO|>`` against ``<|audio_pad|>``);
* where the encoders live (``model.model.audio_tower`` and ``model.model.visual`` in both) and how
  many tokens an audio encoding yields (``audio_output_lengths``);
* the time axis: the model class whose ``get_rope_index`` lays out audio and frames
  (``rope_index_owner``) and the constants it reads (``rope_config``). Both put a clip's audio
  inside its video (``<|vision_bos|><|audio_bos|> … <|audio_eos|><|vision_eos|>``); Qwen2.5-Omni
  interleaves frames and audio in 2 s chunks at 25 positions per second, Qwen3-Omni orders every
  frame grid and audio token by its own time position (13 per second in the released processor);
* vision encoder outputs: Qwen3-Omni's carry ``deepstack_features`` (one tensor per chosen vision
  layer, added to the first text layers) besides the pooled output (``has_deepstack``);
* the export that vLLM and lmms-eval load (``full_architecture``; weights ``thinker.<name>``;
  Qwen2.5-Omni's full model also reads a ``spk_dict.pt``, ``needs_speakers``);
* mixture of experts (``moe``): Qwen3-Omni's text layers route tokens to experts with a
  load-balancing auxiliary loss (``router_aux_loss_coef`` in its text config). TRL adds it to the
  SFT and GRPO losses itself (``aux_loss``, logged); the experts and routers are text-model
  parameters, trained like the rest of the text model, while only the encoders are frozen.

Qwen2.5-Omni is the default family (``DEFAULT_FAMILY``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch


@dataclass(frozen=True)
class StudentFamily:
    """One family of Omni thinkers (see the module docstring for what each field is for)."""

    name: str
    title: str  # for messages
    module: str  # transformers.models.<module>
    thinker_model_type: str
    full_model_type: str
    thinker_class_name: str
    full_class_name: str
    full_config_class_name: str
    processor_class_name: str
    rope_owner_name: str  # the class whose get_rope_index lays out the time axis
    multimodal_tokens: tuple[str, ...]  # special tokens a student must never sample
    moe: bool = False
    has_deepstack: bool = False
    needs_speakers: bool = False  # the full model's from_pretrained reads spk_dict.pt
    encoders: tuple[str, ...] = ("audio_tower", "visual")  # attributes of thinker.model, frozen in the paper

    @property
    def full_architecture(self) -> str:
        """The ``architectures`` entry of an export (what vLLM's registry and lmms-eval load)."""
        return self.full_class_name

    def _modeling(self):
        return importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")

    def thinker_class(self) -> type:
        return getattr(importlib.import_module("transformers"), self.thinker_class_name)

    def full_class(self) -> type:
        return getattr(importlib.import_module("transformers"), self.full_class_name)

    def full_config_class(self) -> type:
        return getattr(importlib.import_module("transformers"), self.full_config_class_name)

    def rope_index_owner(self) -> type:
        return getattr(self._modeling(), self.rope_owner_name)

    def rope_config(self, processor) -> SimpleNamespace:
        """The constants ``get_rope_index`` reads, taken from the processor (it shares them with the model)."""
        tok = processor.tokenizer
        config = SimpleNamespace(
            image_token_id=tok.convert_tokens_to_ids(tok.image_token),
            video_token_id=tok.convert_tokens_to_ids(tok.video_token),
            audio_token_id=tok.convert_tokens_to_ids(tok.audio_token),
            vision_start_token_id=tok.convert_tokens_to_ids(tok.vision_bos_token),
            audio_start_token_id=tok.convert_tokens_to_ids(tok.audio_bos_token),
            position_id_per_seconds=processor.position_id_per_seconds,
            seconds_per_chunk=getattr(processor, "seconds_per_chunk", None),
        )
        if self.name == QWEN3_OMNI.name:
            config.audio_config = SimpleNamespace(n_window=processor.n_window)
        return config

    def audio_output_lengths(self, thinker_model, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Audio tokens per audio (what the encoder emits) for mel ``feature_lengths``."""
        if self.name == QWEN3_OMNI.name:
            n_window = thinker_model.model.audio_tower.config.n_window
            return self._modeling()._get_feat_extract_output_lengths(feature_lengths, n_window)
        return thinker_model.model.audio_tower._get_feat_extract_output_lengths(feature_lengths)[1]

    def encoder_modules(self, thinker_model) -> list[torch.nn.Module]:
        return [getattr(thinker_model.model, name) for name in self.encoders]


def without_router_loss(config) -> None:
    """Turn off ``output_router_logits`` in a (thinker) config, in place.

    TRL's SFT trainer switches it on to add the router loss, and the saved checkpoint keeps it; a
    model that computes the router loss in ``generate`` fails at the first decoding step (its
    attention mask spans the whole sequence, the router logits only the new token). Generation
    (evaluation, export) never needs it."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and getattr(text, "output_router_logits", False):
        text.output_router_logits = False


QWEN2_5_OMNI = StudentFamily(
    name="qwen2.5-omni", title="Qwen2.5-Omni", module="qwen2_5_omni",
    thinker_model_type="qwen2_5_omni_thinker", full_model_type="qwen2_5_omni",
    thinker_class_name="Qwen2_5OmniThinkerForConditionalGeneration",
    full_class_name="Qwen2_5OmniForConditionalGeneration", full_config_class_name="Qwen2_5OmniConfig",
    processor_class_name="Qwen2_5OmniProcessor",
    rope_owner_name="Qwen2_5OmniPreTrainedModelForConditionalGeneration",
    multimodal_tokens=("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                       "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>"),
    needs_speakers=True,
)
QWEN3_OMNI = StudentFamily(
    name="qwen3-omni", title="Qwen3-Omni", module="qwen3_omni_moe",
    thinker_model_type="qwen3_omni_moe_thinker", full_model_type="qwen3_omni_moe",
    thinker_class_name="Qwen3OmniMoeThinkerForConditionalGeneration",
    full_class_name="Qwen3OmniMoeForConditionalGeneration", full_config_class_name="Qwen3OmniMoeConfig",
    processor_class_name="Qwen3OmniMoeProcessor",
    rope_owner_name="Qwen3OmniMoePreTrainedModelForConditionalGeneration",
    multimodal_tokens=("<|audio_pad|>", "<|audio_start|>", "<|audio_end|>", "<|box_start|>", "<|box_end|>",
                       "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                       "<|image_pad|>", "<|video_pad|>"),
    moe=True, has_deepstack=True,
)
FAMILIES = {f.name: f for f in (QWEN2_5_OMNI, QWEN3_OMNI)}
DEFAULT_FAMILY = QWEN2_5_OMNI
ALL_MULTIMODAL_TOKENS = tuple(dict.fromkeys(t for f in FAMILIES.values() for t in f.multimodal_tokens))


class UnknownStudentError(ValueError):
    """A checkpoint or object of no known student family (the message names what it is)."""


def _model_type(obj: Any) -> str | None:
    if isinstance(obj, (str, Path)):
        config = Path(obj) / "config.json"
        if not config.exists():
            raise UnknownStudentError(f"{obj}: no config.json (not a checkpoint directory)")
        return json.loads(config.read_text()).get("model_type")
    if isinstance(obj, dict):
        return obj.get("model_type")
    config = getattr(obj, "config", obj)
    return getattr(config, "model_type", None)


def family_of(obj: Any) -> StudentFamily:
    """The family of a checkpoint directory, a config (object or dict), a model or a processor."""
    name = type(obj).__name__
    for family in FAMILIES.values():
        if name == family.processor_class_name:
            return family
    while hasattr(obj, "module") and not hasattr(obj, "config"):  # DDP / accelerate wrappers
        obj = obj.module
    model_type = _model_type(obj)
    for family in FAMILIES.values():
        if model_type in (family.thinker_model_type, family.full_model_type):
            return family
    known = ", ".join(t for f in FAMILIES.values() for t in (f.thinker_model_type, f.full_model_type))
    raise UnknownStudentError(f"model_type {model_type!r} is no known student family (known: {known})")
