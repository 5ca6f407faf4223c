"""Tiny random-weight models built offline from configs (no model hub), for tests and the demo.

``python -m training.tiny_models --out outputs/tiny [--seed 0]`` writes

* ``omni/``: a Qwen2.5-Omni *thinker* (``Qwen2_5OmniThinkerForConditionalGeneration``) with its
  processor (byte-level BPE tokenizer trained on the spot, Whisper feature extractor, Qwen2-VL image
  and video processors) and a chat template that renders audio, image and video parts. It is the
  student, and can also stand in for a vision or audio teacher behind ``transformers serve``.
* ``text/``: a tiny Qwen2 causal LM with the same tokenizer: the stand-in merger.

Both load with ``from_pretrained`` and are deterministic given the seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
    "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
]
# Multimodal tokens a student must never sample (TRL only suppresses the image token).
MULTIMODAL_TOKENS = SPECIAL_TOKENS[3:]

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

TEXT_HIDDEN = 64
NUM_MEL_BINS = 128


def _training_text() -> list[str]:
    """A small corpus for the BPE: the paper prompts, tags and option letters."""
    from prompts import load_prompt

    lines = [load_prompt(name) for name in ("vision_teacher", "audio_teacher", "merger")]
    lines += ["<think>", "</think>", "<answer>A</answer>", "<answer>B</answer>", "<answer>C</answer>",
              "<answer>D</answer>", "Answer: (A) (B) (C) (D)", "The answer is", "colour screen tone noise"]
    return lines * 4


def build_tokenizer(out: Path):
    """Train a 512-token byte-level BPE and wrap it as a ``Qwen2TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens={
            "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
        },
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    from transformers import (Qwen2_5OmniProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor,
                              WhisperFeatureExtractor)

    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
    image_processor = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2,
                                            size={"shortest_edge": pixels["min_pixels"],
                                                  "longest_edge": pixels["max_pixels"]})
    feature_extractor = WhisperFeatureExtractor(feature_size=NUM_MEL_BINS, sampling_rate=16000,
                                                hop_length=160, n_fft=400)
    return Qwen2_5OmniProcessor(image_processor=image_processor, video_processor=video_processor,
                                feature_extractor=feature_extractor, tokenizer=tokenizer,
                                chat_template=CHAT_TEMPLATE)


def thinker_config(tokenizer, hidden: int = TEXT_HIDDEN):
    from transformers import Qwen2_5OmniThinkerConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": hidden * 2,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": False,
    }
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "in_channels": 3,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "out_hidden_size": hidden, "fullatt_block_indexes": [1], "window_size": 56}
    audio = {"num_mel_bins": NUM_MEL_BINS, "encoder_layers": 2, "encoder_attention_heads": 2,
             "encoder_ffn_dim": 64, "d_model": 32, "output_dim": hidden, "max_source_positions": 1500,
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


def build_omni(out: Path, seed: int = 0) -> Path:
    """Write the tiny Omni thinker + processor to ``out``."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out)
    processor = build_processor(tokenizer)
    model = Qwen2_5OmniThinkerForConditionalGeneration(thinker_config(tokenizer))
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_text(out: Path, seed: int = 0, hidden: int = TEXT_HIDDEN) -> Path:
    """Write the tiny Qwen2 text model (merger stand-in) + tokenizer to ``out``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=False,
                         bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_all(out: Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    return {"omni": build_omni(out / "omni", seed), "text": build_text(out / "text", seed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.tiny_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/tiny"), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    args = parser.parse_args(argv)
    for name, path in build_all(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
