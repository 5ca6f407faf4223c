"""``serving.prepare_af3_think`` on a tiny random Audio Flamingo 3 with a tiny think adapter.

The reference is what AF3's model card does at run time: base model, ``load_state_dict`` of the
non-LoRA tensors, then PEFT's LoRA on top. The merged checkpoint must give the same logits.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from serving.prepare_af3_think import MergeError, canonical_key, main, merge

# Language-model attention and MLP projections only (the audio tower has q/k/v projections too).
LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
NON_LORA = ("model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias",
            "model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias",
            "model.audio_tower.layer_norm.weight")
# How each layout names things, as a rewrite of transformers-5 module names.
LAYOUTS = {
    "transformers": [],
    "checkpoint": [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                   ("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector.")],
    "nvidia": [("model.language_model.", "llm.model."), ("lm_head.", "llm.lm_head."),
               ("model.audio_tower.", "sound_tower.sound_tower."),
               ("model.multi_modal_projector.linear_1.", "sound_mm_projector.layers.0."),
               ("model.multi_modal_projector.linear_2.", "sound_mm_projector.layers.2.")],
}


def _relayout(key: str, layout: str) -> str:
    prefix = "base_model.model." if key.startswith("base_model.model.") else ""
    key = key[len(prefix):]
    for old, new in LAYOUTS[layout]:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    return prefix + key


def _tiny_af3(tokenizer_dir, out):
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        AutoTokenizer,
        WhisperFeatureExtractor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(["<sound>"], special_tokens=True)
    config = AudioFlamingo3Config(
        audio_config={"model_type": "audioflamingo3_encoder", "num_mel_bins": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "intermediate_size": 64, "hidden_size": 32},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "tie_word_embeddings": False},
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    torch.manual_seed(0)
    model = AudioFlamingo3ForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    processor = AudioFlamingo3Processor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
        tokenizer=tokenizer)
    processor.save_pretrained(out)
    return processor


def _inputs(processor):
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    return dict(processor(text=["<sound>What is this sound?"], audio=[audio], sampling_rate=16000))


@pytest.fixture(scope="module")
def af3(tiny_models, tmp_path_factory):
    """A tiny AF3 base checkpoint, the think weights (transformers names) and reference logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AudioFlamingo3ForConditionalGeneration

    root = tmp_path_factory.mktemp("af3")
    base = root / "base"
    processor = _tiny_af3(tiny_models["text"], base)
    inputs = _inputs(processor)
    model = AudioFlamingo3ForConditionalGeneration.from_pretrained(base).eval()
    with torch.no_grad():
        base_logits = model(**inputs).logits
    generator = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    non_lora = {k: torch.randn(params[k].shape, generator=generator) * 0.2 for k in NON_LORA}
    result = model.load_state_dict(non_lora, strict=False)
    assert not result.unexpected_keys
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        reference = peft_model(**inputs).logits
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    return {"base": base, "adapter": adapter, "non_lora": non_lora, "inputs": inputs,
            "reference": reference, "base_logits": base_logits}


def _think_dir(af3, dest, layout, sharded=False):
    """``dest/think`` with the adapter and non-LoRA tensors named as ``layout`` names them."""
    shutil.copytree(af3["base"], dest)
    if sharded:
        from transformers import AudioFlamingo3ForConditionalGeneration

        (dest / "model.safetensors").unlink()
        model = AudioFlamingo3ForConditionalGeneration.from_pretrained(af3["base"])
        model.save_pretrained(dest, max_shard_size="300KB")
    think = dest / "think"
    think.mkdir()
    shutil.copy(af3["adapter"] / "adapter_config.json", think)
    adapter = load_file(str(af3["adapter"] / "adapter_model.safetensors"))
    save_file({_relayout(k, layout): v for k, v in adapter.items()}, str(think / "adapter_model.safetensors"))
    torch.save({_relayout("base_model.model." + k, layout): v for k, v in af3["non_lora"].items()},
               think / "non_lora_trainables.bin")
    return dest


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "sharded"), [("transformers", False), ("checkpoint", False), ("nvidia", True)])
def test_merged_checkpoint_matches_base_plus_adapter(af3, tmp_path, layout, sharded):
    from transformers import AudioFlamingo3ForConditionalGeneration, AutoProcessor

    src = _think_dir(af3, tmp_path / "src", layout, sharded)
    out = tmp_path / "merged"
    assert main(["--src", str(src), "--out", str(out)]) == 0

    summary = json.loads((out / "avrt_merge.json").read_text())
    assert summary["replaced"] == len(NON_LORA)
    assert summary["lora_merged"] == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    # self-contained and adapter-free: loads without the base, its processor included
    assert not (out / "think").exists() and not (out / "adapter_config.json").exists()
    processor = AutoProcessor.from_pretrained(out)
    merged = AudioFlamingo3ForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        logits = merged(**_inputs(processor)).logits
    torch.testing.assert_close(logits, af3["reference"], atol=1e-4, rtol=1e-4)  # float32 merge rounding
    assert (logits - af3["base_logits"]).abs().max() > 0.1  # the think weights did change it
    # same key names and shards as the source (the layout vLLM's AudioFlamingo3 loader expects)
    assert _keys_by_file(out) == _keys_by_file(src)
    assert (out / "model.safetensors.index.json").exists() == sharded
    keys = [k for names in _keys_by_file(out).values() for k in names]
    assert any(k.startswith("language_model.model.layers.") for k in keys)


def _keys_by_file(folder):
    files = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            files[path.name] = sorted(handle.keys())
    return files


def test_canonical_key_layouts():
    assert canonical_key("base_model.model.model.language_model.layers.3.mlp.up_proj") == \
        "language_model.model.layers.3.mlp.up_proj"
    assert canonical_key("base_model.model.llm.model.layers.3.self_attn.q_proj.base_layer.weight") == \
        "language_model.model.layers.3.self_attn.q_proj.weight"
    assert canonical_key("sound_mm_projector.layers.2.bias") == "multi_modal_projector.linear_2.bias"
    assert canonical_key("sound_tower.sound_tower.conv1.weight") == "audio_tower.conv1.weight"
    assert canonical_key("lm_head.weight") == "language_model.lm_head.weight"
    assert canonical_key("language_model.model.norm.weight") == "language_model.model.norm.weight"
    assert canonical_key("weird.proj.weight", (("weird.", "multi_modal_projector."),)) == \
        "multi_modal_projector.proj.weight"


def test_unmapped_think_tensor_stops_the_merge(af3, tmp_path, capsys):
    src = _think_dir(af3, tmp_path / "src", "transformers")
    extra = torch.load(src / "think" / "non_lora_trainables.bin", weights_only=True)
    extra["base_model.model.speech_mm_projector.layers.0.weight"] = torch.zeros(2, 2)
    torch.save(extra, src / "think" / "non_lora_trainables.bin")
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "speech_mm_projector.layers.0.weight" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()
    # a --rename routes an unforeseen prefix; a wrong shape is still refused
    renames = (("speech_mm_projector.layers.0.", "audio_tower.layers.0.fc1."),)
    extra["base_model.model.speech_mm_projector.layers.0.weight"] = torch.zeros(3, 3)
    torch.save(extra, src / "think" / "non_lora_trainables.bin")
    with pytest.raises(MergeError, match="shape"):
        merge(src, tmp_path / "out", renames=renames)
    extra["base_model.model.speech_mm_projector.layers.0.weight"] = torch.full((64, 32), 0.5)
    torch.save(extra, src / "think" / "non_lora_trainables.bin")
    merge(src, tmp_path / "out", renames=renames)
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(merged["audio_tower.layers.0.fc1.weight"], torch.full((64, 32), 0.5))
