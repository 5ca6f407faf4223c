"""Student export: a thinker checkpoint becomes a full Qwen2.5-Omni checkpoint (the naming vLLM 0.33
and lmms-eval's ``qwen2_5_omni`` load) that reloads in transformers with identical weights and logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from evaluation.export_student import main
from student.export import FULL_ARCHITECTURE, export_student

# vLLM 0.33's registry maps these two names to its Qwen2.5-Omni thinker implementation (FACTS.md).
VLLM_OMNI_ARCHITECTURES = {"Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration"}


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    return export_student(tiny_models["omni"], tmp_path_factory.mktemp("export") / "student")


def test_export_uses_the_full_model_naming(exported, tiny_models):
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni" and config["enable_audio_output"] is False
    assert set(config["architectures"]) <= VLLM_OMNI_ARCHITECTURES and config["architectures"] == [FULL_ARCHITECTURE]
    source = json.loads((tiny_models["omni"] / "config.json").read_text())
    assert config["thinker_config"]["text_config"]["hidden_size"] == source["text_config"]["hidden_size"]
    with safe_open(str(exported / "model.safetensors"), "pt") as new, \
            safe_open(str(tiny_models["omni"] / "model.safetensors"), "pt") as old:
        assert sorted(new.keys()) == sorted("thinker." + k for k in old.keys())
        prefixes = {".".join(k.split(".")[:2]) for k in new.keys()}
        assert {"thinker.model", "thinker.audio_tower", "thinker.visual", "thinker.lm_head"} <= prefixes
    for name in ("tokenizer.json", "chat_template.jinja", "processor_config.json", "spk_dict.pt"):
        assert (exported / name).exists(), name


def test_export_reloads_in_transformers_with_identical_logits(exported, tiny_models, synthetic_data):
    from transformers import AutoProcessor, Qwen2_5OmniForConditionalGeneration

    from evaluation.benchmarks import load_manifest
    from evaluation.evaluate import load_item_media, load_student, make_sample
    from student.inputs import build_inputs

    thinker, processor = load_student(tiny_models["omni"], device="cpu")
    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(exported)
    assert not hasattr(full, "talker"), "no talker built or expected"
    item = load_manifest(synthetic_data / "manifest.jsonl")[0]
    inputs = build_inputs(processor, [make_sample(item, load_item_media(item), "av")])
    assert {"pixel_values_videos", "input_features"} <= inputs.keys(), "every tower takes part"
    reloaded_processor = AutoProcessor.from_pretrained(exported)
    again = build_inputs(reloaded_processor, [make_sample(item, load_item_media(item), "av")])
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.inference_mode():
        before = thinker(**inputs).logits
        after = full.thinker(**inputs).logits
    assert torch.equal(before, after)
    # and the evaluator loads the export as it loads a released full checkpoint
    model, _ = load_student(exported, device="cpu")
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, before)


def test_export_refuses_what_is_not_a_thinker(exported, tmp_path, capsys):
    for model, message in ((exported, "already a full Qwen2.5-Omni checkpoint"), (tmp_path, "no config.json")):
        with pytest.raises(SystemExit) as stopped:
            main(["--model", str(model), "--out", str(tmp_path / "x")])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--speakers-from" in capsys.readouterr().out


def test_export_casts_and_keeps_shards(tiny_models, tmp_path):
    out = export_student(tiny_models["omni"], tmp_path / "bf16", dtype="bfloat16")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["thinker_config"]["dtype"] == "bfloat16"


def test_export_of_a_sharded_checkpoint_writes_a_matching_index(tiny_models, tmp_path):
    from transformers import Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration

    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_models["omni"])
    thinker.save_pretrained(tmp_path / "sharded", max_shard_size="300KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    out = export_student(tmp_path / "sharded", tmp_path / "out")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [s.name for s in shards]
    assert all(k.startswith("thinker.") for k in index["weight_map"])
    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(out)
    expected = thinker.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in full.thinker.state_dict().items())


def test_the_documented_export_commands_run(tiny_models, tmp_path, monkeypatch):
    """The README's, docs/evaluation.md's and docs/serving.md's export lines, as written, on the tiny student."""
    from tests.documented import documented_commands, module_and_args, run_documented

    (tmp_path / "outputs" / "train" / "avrt" / "grpo").mkdir(parents=True)
    (tmp_path / "outputs" / "train" / "avrt" / "grpo" / "final").symlink_to(tiny_models["omni"])
    monkeypatch.chdir(tmp_path)
    lines = [c for _, c in documented_commands() if "-m evaluation.export_student" in c and "avrt-3b" in c]
    assert len(lines) >= 3
    for line in lines:
        assert module_and_args(line, {"S": "x"})[0] == "evaluation.export_student"
        assert run_documented(line, {"S": "outputs/train/avrt/grpo/final"}) == 0, line
    assert (tmp_path / "outputs" / "export" / "avrt-3b" / "model.safetensors").exists()


def test_an_export_names_the_students_own_token_ids_and_prints_no_warning(tiny_models, tmp_path):
    """The full config's talker section names the thinker's tokens: the student's ids, not the released
    tokenizer's (transformers' defaults), which a tiny vocabulary does not hold and which it warns about."""
    import logging

    from transformers.utils import logging as hf_logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = hf_logging.get_logger("transformers")
    logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # an earlier test may have printed the same warning already
    try:
        out = export_student(tiny_models["omni"], tmp_path / "export")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    thinker = json.loads((tiny_models["omni"] / "config.json").read_text())
    talker = json.loads((out / "config.json").read_text())["talker_config"]
    vocab = thinker["text_config"]["vocab_size"]
    ids = {k: v for k, v in talker.items() if k.endswith("_token_id") and not k.startswith("tts_codec")}
    assert ids and all(v is None or 0 <= v < vocab for v in ids.values()), ids
    assert all(talker[k] == thinker[k] for k in ("vision_start_token_id", "audio_start_token_id", "audio_token_index"))
