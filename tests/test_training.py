"""The trainer on the tiny student, on CPU: media in the GRPO loss, label mask, resume, CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from student.inputs import IGNORE_INDEX
from training.runtime import read_metrics
from training.train_config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


def _config(tiny_models, corpus, out, *overrides):
    return load_config(TINY, [f"model={tiny_models['omni']}", f"corpus={corpus}", f"output_dir={out}", *overrides])


def test_config_overrides_are_typed_and_checked(tmp_path):
    config = load_config(TINY, ["grpo.beta=0", "sft.learning_rate=3e-5", "stages=[grpo]", "data.audio=false"])
    assert config.grpo.beta == 0.0 and config.sft.learning_rate == 3e-5 and config.stages == ["grpo"]
    assert config.data.audio is False
    paper = load_config(ROOT / "configs" / "recipes" / "avrt.yaml")
    assert (paper.sft.learning_rate, paper.sft.warmup_steps, paper.sft.weight_decay) == (2e-6, 100, 0.01)
    assert (paper.grpo.num_generations, paper.grpo.epsilon, paper.grpo.beta, paper.grpo.temperature) == (4, 0.2, 0.01, 1.0)
    with pytest.raises(ValidationError, match="grpo.nonsense"):
        load_config(TINY, ["grpo.nonsense=1"])
    assert load_config(TINY, ["gradient_checkpointing=true"]).activation_checkpointing is True, "old name accepted"
    assert (paper.av_layout, paper.encoder_cache, paper.activation_checkpointing) == ("aligned", True, None)
    with pytest.raises(ValidationError, match="av_layout"):
        load_config(TINY, ["av_layout=interleaved"])


def test_sft_collator_masks_everything_but_the_trace(tiny_models, corpus):
    from training.data import MediaLoader, load_corpus
    from training.runtime import load_processor
    from training.sft import SFTCollator

    config = _config(tiny_models, corpus, "unused")
    rows = load_corpus(corpus, config.data).head(2).to_dict("records")
    processor = load_processor(tiny_models["omni"])
    batch = SFTCollator(processor, MediaLoader(corpus, config.data))(rows)
    assert {"input_features", "pixel_values_videos", "video_grid_thw", "labels"} <= set(batch)
    for labels, row in zip(batch["labels"], rows):
        assert processor.tokenizer.decode(labels[labels != IGNORE_INDEX]) == row["merged"] + "<|im_end|>"


@pytest.fixture(scope="module")
def grpo_trainer(tiny_models, corpus, tmp_path_factory):
    from training.grpo import build_grpo_trainer

    out = tmp_path_factory.mktemp("grpo")
    config = _config(tiny_models, corpus, out, "grpo.beta=0", "grpo.max_steps=1")
    return build_grpo_trainer(config, str(tiny_models["omni"]), out / "grpo")


def _logps(trainer, rows, completion_ids, prompt_rows=None):
    """Per-token log-probs of ``completion_ids`` after each row's prompt, through the trainer's forward."""
    prompts = [torch.tensor(r["prompt_ids"]) for r in (prompt_rows or rows)]
    width = max(len(p) for p in prompts)
    pad = trainer.processing_class.tokenizer.pad_token_id
    ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p, completion_ids]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p) + len(completion_ids))]) for p in prompts]).long()
    trainer._row_media = rows
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, len(completion_ids))
    return logps


def test_grpo_loss_forward_sees_audio_and_frames(grpo_trainer):
    """Fails if audio or frames stop reaching the GRPO log-prob forward, cached or not."""
    from dataclasses import replace

    trainer = grpo_trainer
    trainer.model.eval()
    row = trainer.train_dataset[0]
    (media,) = trainer._prepare_media([row])
    assert "encoded" in media, "frozen encoders: the prompt's media are encoded once"
    completion = torch.tensor(trainer.processing_class.tokenizer("<think>red</think><answer>A</answer>")["input_ids"])
    base = _logps(trainer, [media], completion)
    assert torch.equal(base, _logps(trainer, [dict(media)], completion)), "deterministic forward"
    encoded = media["encoded"]
    louder = {**media, "encoded": replace(encoded, audio=tuple(a + 1.0 for a in encoded.audio))}
    darker = {**media, "encoded": replace(encoded, video=tuple(v * -1.0 for v in encoded.video))}
    assert not torch.allclose(base, _logps(trainer, [louder], completion)), "audio does not reach the loss forward"
    assert not torch.allclose(base, _logps(trainer, [darker], completion)), "frames do not reach the loss forward"
    raw = {k: v for k, v in media.items() if k != "encoded"}  # the uncached path: encoders run in the forward
    assert torch.equal(base, _logps(trainer, [raw], completion)), "cached and uncached log-probs differ"
    raw_louder = {**raw, "input_features": raw["input_features"] + 1.0}
    assert not torch.allclose(base, _logps(trainer, [raw_louder], completion))
    (other,) = trainer._prepare_media([trainer.train_dataset[1]])
    assert _logps(trainer, [media, other], completion).shape[0] == 2
    with pytest.raises(RuntimeError, match="do not belong"):  # media swapped between rows
        _logps(trainer, [other, media], completion, prompt_rows=[media, other])


def test_grpo_step_encodes_each_prompt_once(grpo_trainer):
    """A real GRPO step (G=4: generation, loss forward, backward): one encoding per prompt, none with grad."""
    from student.inputs import generation_suppress_tokens
    from training.encoders import count_encodings

    trainer = grpo_trainer
    assert set(trainer.generation_config.suppress_tokens) == set(generation_suppress_tokens(trainer.processing_class))
    prompts: list = []
    prepare = trainer._prepare_media
    trainer._prepare_media = lambda inputs: prompts.append({r["id"] for r in inputs}) or prepare(inputs)
    try:
        with count_encodings(trainer.model) as counts:
            trainer.train()
    finally:
        del trainer._prepare_media
    n_prompts = sum(len(p) for p in prompts)
    assert trainer.state.global_step == 1 and n_prompts == 1
    assert counts["visual"] == n_prompts and counts["audio"] == n_prompts, counts
    assert counts["outputs_requiring_grad"] == 0
    first = trainer.model.model.audio_tower.parameters().__next__()
    assert not first.requires_grad, "audio encoder is frozen"


def test_sft_resumes_from_last_checkpoint_and_keeps_no_checkpoint_after_final(tiny_models, corpus, tmp_path,
                                                                              monkeypatch):
    import training.sft as sft
    from training.sft_then_grpo import run

    class KilledAtStep2(sft.NoLastStepCheckpoint):  # the process dies during step 2 (checkpoint-1 is on disk)
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt("killed")
            return super().on_step_end(args, state, control, **kwargs)

    config = _config(tiny_models, corpus, tmp_path, "stages=[sft]")
    stage = tmp_path / "sft"
    monkeypatch.setattr(sft, "NoLastStepCheckpoint", KilledAtStep2)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert sorted(p.name for p in stage.glob("checkpoint-*")) == ["checkpoint-1"] and not (stage / "final").exists()
    monkeypatch.undo()
    run(config)
    losses = [r["step"] for r in read_metrics(stage / "metrics.jsonl") if "loss" in r]
    assert losses == [1, 2], "resumed at step 2 (a restart would log step 1 again)"
    assert (stage / "final" / "model.safetensors").exists()
    assert not list(stage.glob("checkpoint-*")), "no optimizer state is kept once final/ is written"
    run(config)  # a finished stage is skipped
    assert [r["step"] for r in read_metrics(stage / "metrics.jsonl") if "loss" in r] == [1, 2]


@pytest.mark.slow
def test_cli_sft_then_grpo_end_to_end(tiny_models, corpus, tmp_path, capsys):
    from training.sft_then_grpo import main

    out = tmp_path / "run"  # the command's main in this process (its imports are done: seconds sooner)
    main(["--config", str(TINY), "--model", str(tiny_models["omni"]), "--corpus", str(corpus), "--output-dir", str(out),
          "grpo.beta=0.01"])
    assert "summary: sft ->" in capsys.readouterr().out
    for stage in ("sft", "grpo"):
        assert (out / stage / "final" / "model.safetensors").exists()
        assert (out / stage / "config.yaml").exists()
        assert not list((out / stage).glob("checkpoint-*")), "the last step writes final/ only"
        plan = json.loads((out / stage / "memory_plan.json").read_text())
        assert plan["checkpointing"] is False and plan["reason"] == "as configured"
    assert json.loads((out / "grpo" / "init.json").read_text())["model"] == str(out / "sft" / "final")
    sft = read_metrics(out / "sft" / "metrics.jsonl")
    grpo = read_metrics(out / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in sft if "loss" in r] == [1, 2]
    assert [r["step"] for r in grpo if "rewards/accuracy_reward/mean" in r] == [1, 2]
    assert all("rewards/format_reward/mean" in r and "kl" in r for r in grpo if "loss" in r)
    for png in ("sft/plots/loss.png", "grpo/plots/rewards.png", "grpo/plots/completion_length.png"):
        assert (out / png).stat().st_size > 1000


def test_sft_grpo_and_evaluation_build_identical_inputs(grpo_trainer, tiny_models, corpus):
    """The same corpus item: SFT's training prompt, GRPO's prompt and evaluation's generate inputs agree."""
    from evaluation.evaluate import Decoding, HFGenerator
    from student.inputs import MEDIA_KEYS, load_corpus_sample
    from tests.conftest import prompt_lengths
    from training.data import MediaLoader, load_corpus
    from training.sft import SFTCollator

    trainer = grpo_trainer
    processor = trainer.processing_class
    config = _config(tiny_models, corpus, "unused")
    row = load_corpus(corpus, config.data).iloc[0].to_dict()
    sft = SFTCollator(processor, MediaLoader(corpus, config.data))([row])
    n = prompt_lengths(sft)[0]
    (grpo,) = trainer._prepare_media([trainer.train_dataset[0]])
    assert trainer.train_dataset[0]["id"] == row["id"]
    generator = HFGenerator(trainer.model, processor, Decoding(max_new_tokens=2))
    generator.generate([load_corpus_sample(row, corpus)])
    evaluation = generator.last_inputs

    assert tuple(sft["input_ids"][0, :n].tolist()) == grpo["prompt_ids"] == tuple(evaluation["input_ids"][0].tolist())
    assert torch.equal(sft["position_ids"][:, 0, :n], grpo["positions"])
    assert torch.equal(evaluation["position_ids"][:, 0], grpo["positions"])
    media = [k for k in MEDIA_KEYS if k in grpo]
    assert {"pixel_values_videos", "input_features", "feature_attention_mask"} <= set(media)
    for key in media:
        assert torch.equal(sft[key], grpo[key]) and torch.equal(evaluation[key], grpo[key]), key


def test_stage_fields_reach_trl_under_their_own_names(tmp_path):
    from trl import GRPOConfig, SFTConfig

    from training.memory import MemoryPlan
    from training.runtime import trl_config

    config = load_config(TINY, ["sft.lr_scheduler=linear", "grpo.epochs=2", "grpo.epsilon=0.3"])  # old names accepted
    assert config.sft.lr_scheduler_type == "linear" and config.grpo.num_train_epochs == 2
    with pytest.raises(ValidationError, match="epochs and num_train_epochs both given"):
        load_config(TINY, ["sft.epochs=2", "sft.num_train_epochs=3"])
    for trl_class, stage in ((SFTConfig, config.sft), (GRPOConfig, config.grpo)):
        plan = MemoryPlan(False, stage.per_device_train_batch_size, stage.gradient_accumulation_steps, None, None, "")
        args = trl_config(trl_class, stage, config, tmp_path, plan)
        for name, value in stage.model_dump().items():
            if name not in stage.OURS:
                assert getattr(args, name) == value, name
    assert args.epsilon == 0.3  # the GRPO stage's
