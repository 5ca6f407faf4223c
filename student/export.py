"""Export a trained student (a Qwen2.5-Omni or Qwen3-Omni *thinker* checkpoint) as a full-model checkpoint.

``export_student`` is called by the trainer's own rollout server (``training.rollout``) and by the
command ``python -m evaluation.export_student``.

vLLM 0.33 registers Qwen2.5-Omni under ``Qwen2_5OmniModel`` / ``Qwen2_5OmniForConditionalGeneration``
(its thinker implementation behind the full model's names), not under the thinker-only class the
trainer saves, and lmms-eval's ``qwen2_5_omni`` model loads ``Qwen2_5OmniForConditionalGeneration``.
Both read the published full-model layout, which this writes. Qwen3-Omni students export the same
way as ``Qwen3OmniMoeForConditionalGeneration`` (the architecture of the released
Qwen3-Omni-30B-A3B-Thinking, which vLLM serves with its thinker implementation); what differs per
family is in ``student.family``:

* ``config.json``: a ``qwen2_5_omni`` (``qwen3_omni_moe``) config with the student's config as ``thinker_config``,
  ``architectures: ["Qwen2_5OmniForConditionalGeneration"]`` and ``enable_audio_output: false`` (no
  talker: the student answers in text; transformers then builds no talker and expects no talker
  weights); the talker section names the student's own token ids (``talker_token_ids``);
* weights: every tensor renamed ``thinker.<name>`` (``student.served.renamed``), shard by shard (never the whole model in
  memory), optionally cast with ``--dtype``, with a matching ``model.safetensors.index.json``;
* the processor, tokenizer, chat template and generation config copied unchanged;
* Qwen2.5-Omni only: ``spk_dict.pt``, which ``Qwen2_5OmniForConditionalGeneration.from_pretrained`` always reads and
  whose speaker names its ``generate`` checks even for text output: copied from ``--speakers-from``
  (the released Qwen2.5-Omni checkpoint) when given, else the two released names with no voice data
  (text output only).

Serving and benchmark commands for the export are in docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from configs import UserError
from student.family import FAMILIES, QWEN2_5_OMNI, UnknownStudentError, family_of, without_router_loss
from student.served import renamed

FULL_ARCHITECTURE = QWEN2_5_OMNI.full_architecture  # the default family's
# Files beside the weights that serving needs (processor, tokenizer, template, generation defaults).
SIDE_FILES = ("tokenizer*.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
              "chat_template.*", "processor_config.json", "preprocessor_config.json",
              "video_preprocessor_config.json", "generation_config.json",
              "training_config.yaml")  # the trainer's config: evaluation asks the student as it was trained
DTYPES = ("keep", "bfloat16", "float16", "float32")
SPEAKERS = "spk_dict.pt"
SPEAKER_NAMES = ("Chelsie", "Ethan")  # the released voices; full-model generate checks the name


class ExportError(UserError):
    """A source directory that is not a thinker checkpoint (message says what it is)."""


def talker_token_ids(full_class: type, thinker: dict) -> dict[str, int]:
    """The talker section's token ids, which name tokens of the thinker's vocabulary: the student's own
    where its config has them; the TTS text tokens (Qwen2.5-Omni), which a student's config does not
    name, kept where its vocabulary holds them, else its pad token (the export has no talker to read them).
    transformers' defaults are the released tokenizer's ids, outside a tiny student's vocabulary."""
    talker = full_class.sub_configs.get("talker_config")
    vocab = thinker.get("text_config", {}).get("vocab_size")
    ids: dict[str, int] = {}
    for field in dataclasses.fields(talker) if talker else ():
        if field.name in thinker and field.name.endswith(("_token_id", "_token_index")):
            ids[field.name] = thinker[field.name]
        elif field.name.startswith("tts_text_") and vocab and field.default >= vocab:
            ids[field.name] = thinker.get("pad_token_id") or 0
    return ids


def full_config(thinker_config: dict) -> dict:
    """The full-model ``config.json`` around a thinker's config (through transformers' own class for its family)."""
    family = family_of(thinker_config)
    thinker = {k: v for k, v in thinker_config.items() if k not in ("architectures", "transformers_version")}
    full_class = family.full_config_class()
    config = full_class(thinker_config=thinker, talker_config=talker_token_ids(full_class, thinker),
                        enable_audio_output=False)
    config.architectures = [family.full_architecture]
    without_router_loss(config.thinker_config)  # MoE: the router loss belongs to training, not serving
    out = config.to_dict()
    if "dtype" in thinker_config:
        out["dtype"] = thinker_config["dtype"]
    return out


def weight_files(model_dir: Path) -> tuple[list[str], dict | None]:
    """The safetensors shard names and the index (None for a single ``model.safetensors``)."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        return sorted(set(data["weight_map"].values())), data
    if (model_dir / "model.safetensors").exists():
        return ["model.safetensors"], None
    raise ExportError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def export_student(model_dir: str | Path, out: str | Path, dtype: str = "keep",
                   speakers_from: str | Path | None = None) -> Path:
    """Write the full-model checkpoint of the thinker in ``model_dir`` to ``out``; returns ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    src, out = Path(model_dir), Path(out)
    config_file = src / "config.json"
    if not config_file.exists():
        raise ExportError(f"{src}: no config.json (not a checkpoint directory)")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    try:
        family = family_of(config)
    except UnknownStudentError:
        thinkers = ", ".join(f"{f.name} ({f.thinker_model_type})" for f in FAMILIES.values())
        raise ExportError(f"{src}: model_type {model_type!r}, expected a thinker: {thinkers}") from None
    if model_type == family.full_model_type:
        raise ExportError(f"{src} is already a full {family.title} checkpoint: serve it as it is")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    if out.resolve() == src.resolve():
        raise ExportError("--out must differ from --model")
    shards, index = weight_files(src)
    out.mkdir(parents=True, exist_ok=True)
    cast = None if dtype == "keep" else getattr(torch, dtype)
    weight_map: dict[str, str] = {}
    for shard in tqdm(shards, desc="export shards", unit="shard", disable=None):
        tensors = load_file(str(src / shard))
        names = renamed(list(tensors))
        tensors = {names[k]: (v.to(cast) if cast is not None and v.is_floating_point() else v).contiguous()
                   for k, v in tensors.items()}
        save_file(tensors, str(out / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in tensors})
    if index is not None:
        meta = dict(index.get("metadata") or {})
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    full = full_config(config)
    if cast is not None:
        full["dtype"] = dtype
        full["thinker_config"]["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(full, indent=2, sort_keys=True))
    for pattern in SIDE_FILES:
        for path in src.glob(pattern):
            shutil.copy2(path, out / path.name)
    if not family.needs_speakers:
        if speakers_from:
            raise ExportError(f"--speakers-from: a {family.title} export has no {SPEAKERS}")
    elif speakers_from:
        if not (Path(speakers_from) / SPEAKERS).exists():
            raise ExportError(f"--speakers-from {speakers_from}: no {SPEAKERS}")
        shutil.copy2(Path(speakers_from) / SPEAKERS, out / SPEAKERS)
    else:
        torch.save({name: {} for name in SPEAKER_NAMES}, out / SPEAKERS)
    return out
