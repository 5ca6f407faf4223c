"""Merge Audio Flamingo 3's think mode into a plain checkpoint that vLLM can serve.

AF3's think mode is not a separate model: the Hugging Face repository ``nvidia/audio-flamingo-3-hf``
holds the base model at its root and, in ``think/``, a PEFT LoRA adapter (``adapter_config.json``,
``adapter_model.safetensors``) plus ``non_lora_trainables.bin`` (full tensors that were trained
alongside the LoRA, e.g. the audio projector). Its model card loads them as
``model.load_state_dict(non_lora, strict=False)`` then ``PeftModel.from_pretrained(model, repo,
subfolder="think")``. vLLM can do neither, so this tool writes ``base + non-LoRA tensors + LoRA
delta`` as an ordinary checkpoint::

    python -m serving.prepare_af3_think --src models/audio-flamingo-3-hf --out models/audio-flamingo-3-think

It works tensor by tensor on the safetensors shards (no model is instantiated, one shard in memory
at a time) and keeps the source's key names, shard layout, ``config.json`` and processor/tokenizer
files, so the output is self-contained and loads wherever the source loads (vLLM and transformers).
Keys in the adapter and in ``non_lora_trainables.bin`` are mapped onto the checkpoint's names
(``canonical_key``): the PEFT wrapper prefix is dropped, and the three layouts seen in the wild are
accepted: the checkpoint's own (``language_model.model.*``, ``audio_tower.*``,
``multi_modal_projector.*``), transformers 5 module names (``model.language_model.*``, ``lm_head``)
and NVIDIA's original llava names (``llm.*``, ``sound_tower.sound_tower.*``,
``sound_mm_projector.layers.{0,2}``). A tensor that maps to no checkpoint key, or to one of another
shape, stops the merge (nothing is silently dropped, unlike ``strict=False``); ``--rename OLD=NEW``
adds a prefix rewrite for layouts not foreseen here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

PEFT_PREFIX = "base_model.model."
# (old prefix, new prefix), first match wins: transformers 5 module names, then NVIDIA's llava names.
PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "language_model.model."),
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
    ("llm.", "language_model."),
    ("sound_tower.sound_tower.", "audio_tower."),
    ("sound_tower.", "audio_tower."),
    ("sound_mm_projector.", "multi_modal_projector."),
)
# llava's projector is nn.Sequential(Linear, GELU, Linear); transformers names the linears 1 and 2.
PROJECTOR_RULES = (("multi_modal_projector.layers.0.", "multi_modal_projector.linear_1."),
                   ("multi_modal_projector.layers.2.", "multi_modal_projector.linear_2."))
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                      r"(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


class MergeError(ValueError):
    """The think weights do not fit the base checkpoint."""


def _rewrite_prefix(key: str, rules) -> str:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def canonical_key(key: str, renames: tuple[tuple[str, str], ...] = ()) -> str:
    """Map a key from an adapter / ``non_lora_trainables.bin`` onto the checkpoint's key names."""
    while key.startswith(PEFT_PREFIX):
        key = key[len(PEFT_PREFIX):]
    key = key.replace(".base_layer.", ".")
    key = re.sub(r"\.modules_to_save(?:\.[A-Za-z0-9_-]+)?\.", ".", key)
    key = _rewrite_prefix(key, renames)
    key = _rewrite_prefix(key, PREFIX_RULES)
    return _rewrite_prefix(key, PROJECTOR_RULES)


@dataclass
class Updates:
    """What to do to the base tensors: replace some, add a LoRA delta to others."""

    replace: dict[str, torch.Tensor] = field(default_factory=dict)
    delta: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # checkpoint key -> original key (for errors)


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _adapter_file(think: Path) -> Path:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (think / name).is_file():
            return think / name
    raise MergeError(f"no adapter_model.safetensors or adapter_model.bin in {think}")


def _check_adapter_config(config: dict) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise MergeError(f"only LoRA adapters are supported, got peft_type={config.get('peft_type')}")
    for flag in ("use_dora", "fan_in_fan_out", "lora_bias"):
        if config.get(flag):
            raise MergeError(f"adapter_config.json sets {flag}=true, which this tool does not merge")


def lora_scale(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling for one module: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
            break
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def collect_updates(think: Path, renames: tuple[tuple[str, str], ...] = ()) -> Updates:
    """Read ``think/``: non-LoRA tensors to replace and LoRA deltas (``scale * B @ A``) to add."""
    updates = Updates()
    non_lora = think / "non_lora_trainables.bin"
    if non_lora.is_file():
        for key, tensor in _load_tensor_file(non_lora).items():
            _add_replacement(updates, key, tensor, renames)
    config_path = think / "adapter_config.json"
    if not config_path.is_file():
        raise MergeError(f"no adapter_config.json in {think}")
    config = json.loads(config_path.read_text())
    _check_adapter_config(config)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _load_tensor_file(_adapter_file(think)).items():
        match = LORA_KEY.match(key)
        if match is None:
            if ".original_module." not in key:  # modules_to_save: the trained copy replaces the base
                _add_replacement(updates, key, tensor, renames)
            continue
        pairs.setdefault(match["module"], {})[match["kind"]] = tensor
    for module, parts in pairs.items():
        bare = module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module
        target = canonical_key(module, renames) + ".weight"
        if "lora_A" in parts and "lora_B" in parts:
            a, b = parts["lora_A"].float(), parts["lora_B"].float()
            delta = (b @ a) * lora_scale(config, bare, a.shape[0])
        elif "lora_embedding_A" in parts and "lora_embedding_B" in parts:
            a, b = parts["lora_embedding_A"].float(), parts["lora_embedding_B"].float()
            delta = (b @ a).T * lora_scale(config, bare, a.shape[0])
        else:
            raise MergeError(f"incomplete LoRA pair for {module}: has {sorted(parts)}")
        updates.delta[target] = delta
        updates.sources[target] = module
    return updates


def _add_replacement(updates: Updates, key: str, tensor: torch.Tensor, renames) -> None:
    target = canonical_key(key, renames)
    if target in updates.replace:
        raise MergeError(f"two think tensors map to {target}: {updates.sources[target]} and {key}")
    updates.replace[target] = tensor
    updates.sources[target] = key


def weight_map(src: Path) -> dict[str, str]:
    """Checkpoint key -> shard file name, from the index or the single ``model.safetensors``."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    single = src / "model.safetensors"
    if not single.is_file():
        raise MergeError(f"{src} has no model.safetensors(.index.json): pass the Hugging Face layout "
                         "(nvidia/audio-flamingo-3-hf), not NVIDIA's llm/ sound_tower/ folders")
    with safe_open(str(single), framework="pt") as handle:
        return {key: single.name for key in handle.keys()}


def check_updates(updates: Updates, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every update must land on an existing tensor of the same shape."""
    problems = []
    for kind, table in (("non-LoRA", updates.replace), ("LoRA", updates.delta)):
        for key, tensor in table.items():
            if key not in shapes:
                problems.append(f"{kind} {updates.sources[key]!r} -> {key!r}: no such tensor in the base")
            elif tuple(tensor.shape) != shapes[key]:
                problems.append(f"{kind} {updates.sources[key]!r} -> {key!r}: shape {tuple(tensor.shape)} "
                                f"!= base {shapes[key]}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise MergeError(f"{len(problems)} think tensors do not fit the base checkpoint "
                         f"(add --rename OLD=NEW for an unforeseen layout):\n  {shown}{more}")


def _shapes(src: Path, files: set[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in sorted(files):
        with safe_open(str(src / name), framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def merge(src: Path, out: Path, think: Path | None = None,
          renames: tuple[tuple[str, str], ...] = ()) -> dict:
    """Write the merged checkpoint to ``out``; returns the summary also saved as ``avrt_merge.json``."""
    src, out = Path(src), Path(out)
    think = Path(think) if think else src / "think"
    if out.resolve() == src.resolve():
        raise MergeError("--out must differ from --src")
    updates = collect_updates(think, renames)
    wmap = weight_map(src)
    shapes = _shapes(src, set(wmap.values()))
    check_updates(updates, shapes)

    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(wmap.values())):
        with safe_open(str(src / name), framework="pt") as handle:
            metadata = handle.metadata() or {"format": "pt"}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        for key, tensor in tensors.items():
            if key in updates.replace:
                tensor = updates.replace[key].to(tensor.dtype)
            if key in updates.delta:
                tensor = (tensor.float() + updates.delta[key]).to(tensor.dtype)
            tensors[key] = tensor.contiguous()
        save_file(tensors, str(out / name), metadata=metadata)
    for item in src.iterdir():  # config, generation config, tokenizer, processor, chat template
        if item.is_file() and item.suffix != ".safetensors" and item.name not in WEIGHT_FILES:
            shutil.copy2(item, out / item.name)
    if (src / "model.safetensors.index.json").is_file():
        shutil.copy2(src / "model.safetensors.index.json", out / "model.safetensors.index.json")

    summary = {
        "source": str(src), "think": str(think),
        "replaced": len(updates.replace), "lora_merged": len(updates.delta),
        "replaced_by_prefix": dict(Counter(".".join(k.split(".")[:2]) for k in updates.replace)),
        "lora_by_prefix": dict(Counter(".".join(k.split(".")[:2]) for k in updates.delta)),
        "adapter_config": json.loads((think / "adapter_config.json").read_text()),
        "sha256": {p.name: _sha256(p) for p in sorted(think.iterdir()) if p.is_file()},
    }
    (out / "avrt_merge.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _parse_rename(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--rename wants OLD=NEW, got {text!r}")
    old, new = text.split("=", 1)
    return old, new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.prepare_af3_think",
        description="Merge AF3's think LoRA + non_lora_trainables.bin into a checkpoint vLLM can serve.")
    parser.add_argument("--src", required=True, type=Path,
                        help="the Hugging Face AF3 checkpoint (nvidia/audio-flamingo-3-hf downloaded)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the merged checkpoint")
    parser.add_argument("--think", type=Path, default=None, help="the think folder (default: SRC/think)")
    parser.add_argument("--rename", type=_parse_rename, action="append", default=[], metavar="OLD=NEW",
                        help="extra key-prefix rewrite applied to think tensors before the built-in ones")
    args = parser.parse_args(argv)
    try:
        summary = merge(args.src, args.out, args.think, tuple(args.rename))
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {summary['replaced']} tensors replaced {summary['replaced_by_prefix']}, "
          f"{summary['lora_merged']} LoRA deltas merged {summary['lora_by_prefix']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
