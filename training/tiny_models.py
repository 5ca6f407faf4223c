"""Tiny random-weight models built offline from configs (no model hub), for tests and the demo.

``python -m training.tiny_models --out outputs/tiny [--seed 0]`` writes

* ``omni/``: a Qwen2.5-Omni *thinker* (``Qwen2_5OmniThinkerForConditionalGeneration``) with its
  processor (byte-level BPE tokenizer trained on the spot, Whisper feature extractor, Qwen2-VL image
  and video processors) and a chat template that renders audio, image and video parts. It is the
  student, and can also stand in for a vision or audio teacher behind ``transformers serve``.
* ``text/``: a tiny Qwen2 causal LM with the same tokenizer: the stand-in merger.

Both load with ``from_pretrained`` and are deterministic given the seed. The tiny presets draw the
audio encoder's convolution stem at a larger std than the config's (``AUDIO_STEM_STD``), so that a
random audio encoder passes a tone's pitch on, as the random vision encoder passes a screen's colour.
``build_all`` records the builder version in ``OUT/tiny_models.json``; ``--if-changed`` rebuilds only
when that record differs (what ``make demo`` runs).

``python -m training.tiny_models --preset qwen3-omni-tiny --out outputs/tiny/omni3`` writes only a
tiny **Qwen3-Omni** thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``: a mixture-of-experts
text model with 4 experts, 2 per token, deepstack vision features) with its ``Qwen3OmniMoeProcessor``,
built from a config the same way (the other student family of ``student.family``);
``--preset qwen3-omni-vllm-tiny`` gives it head_dim 64, which vLLM's CPU attention serves.

``--preset vllm-tiny`` writes the same two models with head_dim 64 (text width 128, 2 heads), the
smallest that vLLM's CPU attention serves (the tests that start real vLLM use it).

``python -m training.tiny_models --preset omni-3b-shape --text-layers 2 --out /tmp/omni3b`` writes
only the student, with random weights at **Qwen2.5-Omni-3B's published sizes** (real audio and
vision encoders, text width 2048, vocabulary 151936, ``--text-layers`` of the 36 text layers) and
the released preprocessor's settings (128 mel bins, ``chunk_length`` 300 s, frame pixel limits), in
bf16 (about 4.3 GB with 2 text layers). It is for measuring the trainer at the real student's size
(``bench/train_step.py --real-model``); the tokenizer is still the tiny one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from student.family import QWEN3_OMNI
from student.inputs import MULTIMODAL_TOKENS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *MULTIMODAL_TOKENS]
# The tokenizer's named multimodal tokens, per family (the processors find them by these names).
NAMED_TOKENS = {
    "qwen2.5-omni": {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
                     "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
                     "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"},
    "qwen3-omni": {"image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
                   "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
                   "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"},
}
FAMILY_SPECIAL_TOKENS = {"qwen2.5-omni": SPECIAL_TOKENS,
                         "qwen3-omni": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *QWEN3_OMNI.multimodal_tokens]}

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' or 'audio' in part or 'audio_url' in part -%}"
    "{{- '<|audio_bos|><|AUDIO|><|audio_eos|>' -}}"
    "{%- elif part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_bos|><|IMAGE|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_bos|><|VIDEO|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def chat_template(family: str = "qwen2.5-omni") -> str:
    """The chat template with the family's media tokens (Qwen2.5-Omni's is ``CHAT_TEMPLATE``)."""
    template = CHAT_TEMPLATE
    for name, token in NAMED_TOKENS[family].items():
        template = template.replace(NAMED_TOKENS["qwen2.5-omni"][name], token)
    return template

TEXT_HIDDEN = 64
NUM_MEL_BINS = 128
# The tiny audio encoder's convolution stem is drawn at std 0.2 instead of the config's 0.02. At 0.02 its
# output is ~4 % of the sinusoidal positions added to it, so a random encoder maps a 220 Hz and a
# 1760 Hz tone to outputs at cosine 0.9998 (frames of a red and a blue screen: cosine -0.2), and a
# student learns the pitch late or not at all (the demo's verdict failed on some teacher draws:
# bench/demo_student.py). At 0.2 the two tones' outputs differ by 0.6 of their norm, as a pretrained
# encoder's would: the tiny student then stands in for a real one, whose encoders carry the signal.
AUDIO_STEM_STD = 0.2
BUILDER_VERSION = 2  # of the tiny models' weights (2: the audio stem above); build_all records it
BUILT_FILE = "tiny_models.json"  # in build_all's folder


def _training_text() -> list[str]:
    """A small corpus for the BPE: the paper prompts, tags and option letters."""
    from prompts import load_prompt

    lines = [load_prompt(name) for name in ("vision_teacher", "audio_teacher", "merger")]
    lines += ["<think>", "</think>", "<answer>A</answer>", "<answer>B</answer>", "<answer>C</answer>",
              "<answer>D</answer>", "Answer: (A) (B) (C) (D)", "The answer is", "colour screen tone noise"]
    return lines * 4


def build_tokenizer(out: Path, family: str = "qwen2.5-omni"):
    """Train a 512-token byte-level BPE and wrap it as a ``Qwen2TokenizerFast`` (``family``'s special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=FAMILY_SPECIAL_TOKENS[family],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens=dict(NAMED_TOKENS[family]),
    )
    tokenizer.chat_template = chat_template(family)
    return tokenizer


TINY_PRESETS = ("tiny", "vllm-tiny")  # fp32, with a merger stand-in
# Sizes of the student's parts: the tiny test models, and Qwen2.5-Omni-3B's published configuration.
PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "text": {"hidden_size": TEXT_HIDDEN, "intermediate_size": TEXT_HIDDEN * 2, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "mrope_section": [2, 3, 3]},
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                   "fullatt_block_indexes": [1], "window_size": 56},
        "audio": {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32},
        "pixels": {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16},
        "audio_window_s": {"chunk_length": 30},
        "audio_stem_std": AUDIO_STEM_STD,
    },
    "vllm-tiny": {  # head_dim 64 (128 / 2 heads): the smallest vLLM's CPU attention serves (16 is refused)
        "text": {"hidden_size": 2 * TEXT_HIDDEN, "intermediate_size": 4 * TEXT_HIDDEN, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "num_key_value_heads": 2, "mrope_section": [8, 12, 12]},
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                   "fullatt_block_indexes": [1], "window_size": 56},
        "audio": {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32},
        "pixels": {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16},
        "audio_window_s": {"chunk_length": 30},
        "audio_stem_std": AUDIO_STEM_STD,
    },
    "omni-3b-shape": {
        "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                 "num_key_value_heads": 2, "mrope_section": [16, 24, 24], "vocab_size": 151936},
        "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                   "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112},
        "audio": {"encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280},
        "pixels": {"min_pixels": 3136, "max_pixels": 12845056},
        "audio_window_s": {"chunk_length": 300},
    },
}


def build_processor(tokenizer, preset: str = "tiny"):
    from transformers import Qwen2_5OmniProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

    pixels = PRESETS[preset]["pixels"]
    image_processor = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2,
                                            size={"shortest_edge": pixels["min_pixels"],
                                                  "longest_edge": pixels["max_pixels"]})
    feature_extractor = WhisperFeatureExtractor(feature_size=NUM_MEL_BINS, sampling_rate=16000,
                                                hop_length=160, n_fft=400, **PRESETS[preset]["audio_window_s"])
    return Qwen2_5OmniProcessor(image_processor=image_processor, video_processor=video_processor,
                                feature_extractor=feature_extractor, tokenizer=tokenizer,
                                chat_template=CHAT_TEMPLATE)


def thinker_config(tokenizer, preset: str = "tiny", text_layers: int | None = None):
    """The thinker's config at ``preset`` sizes (``text_layers`` overrides the number of text layers)."""
    from transformers import Qwen2_5OmniThinkerConfig

    sizes = PRESETS[preset]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_sizes = dict(sizes["text"])
    mrope = text_sizes.pop("mrope_section")
    hidden = text_sizes["hidden_size"]
    text = {
        "vocab_size": len(tokenizer), **text_sizes, "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": False,
    }
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    vision = {**sizes["vision"], "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "out_hidden_size": hidden}
    audio = {**sizes["audio"], "num_mel_bins": NUM_MEL_BINS, "output_dim": hidden, "max_source_positions": 1500,
             "n_window": 100}
    return Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], vision_token_id=ids["<|vision_pad|>"],
        position_id_per_seconds=25, seconds_per_chunk=2, pad_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                            pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=64)


def build_omni(out: Path, seed: int = 0, preset: str = "tiny", text_layers: int | None = None) -> Path:
    """Write an Omni thinker + processor at ``preset`` sizes to ``out`` (random weights; fp32 if tiny, else bf16)."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out)
    processor = build_processor(tokenizer, preset)
    config = thinker_config(tokenizer, preset, text_layers)
    dtype = torch.float32 if preset in TINY_PRESETS else torch.bfloat16
    model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=dtype)
    stem_std = PRESETS[preset].get("audio_stem_std")
    if stem_std is not None:
        audio = model.model.audio_tower
        with torch.no_grad():
            for conv in (audio.conv1, audio.conv2):
                conv.weight.normal_(0.0, stem_std)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_text(out: Path, seed: int = 0, hidden: int = TEXT_HIDDEN, heads: int = 4) -> Path:
    """Write the tiny Qwen2 text model (merger stand-in, ``hidden / heads`` per head) + tokenizer to ``out``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=False,
                         bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# The tiny Qwen3-Omni thinker: same text width and depth as the tiny Qwen2.5 one, a mixture of 4
# experts (2 per token) in each text layer, vision patches of 16 px with one deepstack layer.
QWEN3_TINY = {
    "text": {"hidden_size": TEXT_HIDDEN, "intermediate_size": TEXT_HIDDEN * 2, "moe_intermediate_size": 32,
             "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": TEXT_HIDDEN // 4, "mrope_section": [2, 3, 3]},
    # image_size and apply_vit_abs_pos_embed: fields of the released config that transformers ignores
    # and vLLM reads (its grid of position embeddings is image_size / patch_size per side: sqrt(64) = 8).
    "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
               "num_position_embeddings": 64, "deepstack_visual_indexes": [0], "image_size": 128,
               "apply_vit_abs_pos_embed": True},
    "audio": {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32,
              "downsample_hidden_size": 16, "n_window": 50, "n_window_infer": 800},
    "pixels": {"min_pixels": 32 * 32 * 4, "max_pixels": 32 * 32 * 16},
    "position_id_per_seconds": 13,  # the released Qwen3-Omni processor's default (25 for Qwen2.5-Omni)
}


# vLLM's CPU attention refuses head_dim 16: the vLLM-servable variant has head_dim 64.
QWEN3_VLLM_TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1,
                   "head_dim": 64, "mrope_section": [8, 12, 12]}


def build_qwen3_processor(tokenizer):
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeProcessor,
        WhisperFeatureExtractor,
    )

    pixels, patch = QWEN3_TINY["pixels"], QWEN3_TINY["vision"]["patch_size"]
    image_processor = Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, temporal_patch_size=2, merge_size=2,
                                            size={"shortest_edge": pixels["min_pixels"],
                                                  "longest_edge": pixels["max_pixels"]})
    feature_extractor = WhisperFeatureExtractor(feature_size=NUM_MEL_BINS, sampling_rate=16000, hop_length=160,
                                                n_fft=400, chunk_length=30)
    return Qwen3OmniMoeProcessor(image_processor=image_processor, video_processor=video_processor,
                                 feature_extractor=feature_extractor, tokenizer=tokenizer,
                                 chat_template=chat_template("qwen3-omni"))


def qwen3_thinker_config(tokenizer, vllm: bool = False):
    """A tiny ``Qwen3OmniMoeThinkerConfig`` whose token ids are the tokenizer's (``vllm``: head_dim 64)."""
    from transformers import Qwen3OmniMoeThinkerConfig

    names = NAMED_TOKENS["qwen3-omni"]
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in names.items()}
    text_sizes = {**QWEN3_TINY["text"], **(QWEN3_VLLM_TEXT if vllm else {})}
    mrope = text_sizes.pop("mrope_section")
    hidden = text_sizes["hidden_size"]
    text = {"vocab_size": len(tokenizer), **text_sizes, "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope,
                                "interleaved": True},
            "bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": False}  # vLLM reads it here
    vision = {**QWEN3_TINY["vision"], "in_channels": 3, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "out_hidden_size": hidden}
    audio = {**QWEN3_TINY["audio"], "num_mel_bins": NUM_MEL_BINS, "output_dim": hidden, "max_source_positions": 1500}
    return Qwen3OmniMoeThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_end_token_id=ids["vision_eos_token"],
        position_id_per_seconds=QWEN3_TINY["position_id_per_seconds"], tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def build_qwen3_omni(out: Path, seed: int = 0, vllm: bool = False) -> Path:
    """Write the tiny Qwen3-Omni thinker + processor to ``out`` (random weights, fp32; ``vllm``: head_dim 64)."""
    import torch
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out, "qwen3-omni")
    processor = build_qwen3_processor(tokenizer)
    model = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(qwen3_thinker_config(tokenizer, vllm),
                                                                     dtype=torch.float32)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_all(out: Path, seed: int = 0, preset: str = "tiny") -> dict[str, Path]:
    """The student (``omni``) and the merger stand-in (``text``) at a tiny preset's sizes; ``out/BUILT_FILE``
    records the builder version, seed and preset (``built_by_this_version``)."""
    out = Path(out)
    text = PRESETS[preset]["text"]
    built = {"omni": build_omni(out / "omni", seed, preset),
             "text": build_text(out / "text", seed, text["hidden_size"], text["num_attention_heads"])}
    (out / BUILT_FILE).write_text(json.dumps(_build_record(seed, preset)) + "\n")
    return built


def _build_record(seed: int, preset: str) -> dict:
    return {"builder_version": BUILDER_VERSION, "seed": seed, "preset": preset}


def built_by_this_version(out: Path, seed: int = 0, preset: str = "tiny") -> bool:
    """Whether ``out`` holds what ``build_all(out, seed, preset)`` writes in this version of the builder."""
    record = Path(out) / BUILT_FILE
    return record.is_file() and json.loads(record.read_text()) == _build_record(seed, preset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.tiny_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/tiny"), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    parser.add_argument("--preset", choices=sorted([*PRESETS, "qwen3-omni-tiny", "qwen3-omni-vllm-tiny"]), default="tiny",
                        help="tiny: student + merger for tests; vllm-tiny: the same with head_dim 64, which vLLM's "
                             "CPU attention serves; omni-3b-shape: only the student, at Qwen2.5-Omni-3B's sizes; "
                             "qwen3-omni-tiny: only a tiny Qwen3-Omni (MoE) student; qwen3-omni-vllm-tiny: the same "
                             "with head_dim 64")
    parser.add_argument("--text-layers", type=int, help="number of text layers (omni-3b-shape: default 36)")
    parser.add_argument("--if-changed", action="store_true",
                        help="tiny presets: build only if OUT does not hold this builder version's models")
    args = parser.parse_args(argv)
    if args.if_changed and args.preset in TINY_PRESETS and built_by_this_version(args.out, args.seed, args.preset):
        print(f"reusing the tiny models in {args.out} (same builder version, seed and preset)")
        return
    if args.preset.startswith("qwen3-omni"):
        built = {"omni": build_qwen3_omni(args.out, args.seed, vllm=args.preset == "qwen3-omni-vllm-tiny")}
    elif args.preset in TINY_PRESETS and args.text_layers is None:
        built = build_all(args.out, args.seed, args.preset)
    else:
        built = {"omni": build_omni(args.out, args.seed, args.preset, args.text_layers)}
    for name, path in built.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
