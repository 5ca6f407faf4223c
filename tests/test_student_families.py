"""Both student families (Qwen2.5-Omni, Qwen3-Omni): detection, the aligned time axis, the MoE split,
and the whole path with a tiny Qwen3-Omni student (SFT, GRPO with the encoder cache, export, hf evaluation).

The encoder-cache bars (encodings per prompt per step, no gradient into frozen encoders, cached =
uncached log-probs) run for both families in ``tests/test_encoders.py``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serving.vllm_server import VllmServer, find_launcher, project_python, server_env
from student.family import FAMILIES, QWEN2_5_OMNI, QWEN3_OMNI, UnknownStudentError, family_of
from student.inputs import StudentSample, build_inputs
from tests.conftest import STUDENT_FAMILIES, assert_positions_are_the_models, free_port
from training.runtime import read_metrics
from training.train_config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


def _frames(n: int = 8, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for _ in range(n)]


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _clip(seconds: float = 10.0) -> StudentSample:
    return StudentSample("What colour?", ["red", "green", "blue", "yellow"], _frames(), _audio(seconds),
                         duration=seconds)


def test_family_is_detected_from_checkpoints_configs_models_and_processors(student_dir, tmp_path):
    from transformers import AutoConfig, AutoProcessor

    family = family_of(student_dir)
    assert family is family_of(AutoConfig.from_pretrained(student_dir)) is family_of(AutoProcessor.from_pretrained(student_dir))
    assert family is family_of(json.loads((student_dir / "config.json").read_text()))
    assert family in (QWEN2_5_OMNI, QWEN3_OMNI) and family.moe == (family is QWEN3_OMNI)
    assert family_of({"model_type": family.full_model_type}) is family  # an export or a released full checkpoint
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UnknownStudentError, match="'llama' is no known student family"):
        family_of(tmp_path)
    assert set(FAMILIES) == set(STUDENT_FAMILIES)


@pytest.mark.parametrize("family_name", STUDENT_FAMILIES)
def test_aligned_clip_gives_audio_and_frames_of_one_second_one_time(family_name, tiny_models, request):
    """Video-with-sound layout in both families: the frames at t s share the time position of the audio at t s."""
    from transformers import AutoProcessor

    path = request.getfixturevalue("tiny_qwen3_omni") if family_name == "qwen3-omni" else tiny_models["omni"]
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    batch = build_inputs(processor, [_clip(10.0)])
    ids = batch["input_ids"][0]
    times = batch["position_ids"][0, 0]
    bos = ids.tolist().index(tok.convert_tokens_to_ids(tok.vision_bos_token))
    assert int(ids[bos + 1]) == tok.convert_tokens_to_ids(tok.audio_bos_token), "the audio rides inside the video"
    audio = times[ids == tok.convert_tokens_to_ids(tok.audio_token)]
    video = times[ids == tok.convert_tokens_to_ids(tok.video_token)]
    rate = processor.position_id_per_seconds  # 25 (Qwen2.5-Omni) / 13 (Qwen3-Omni) positions per second
    start = int(audio[0])
    assert torch.equal(audio, torch.arange(start, start + len(audio))) and len(audio) >= 10 * rate - 1
    per_grid = float(batch["video_second_per_grid"][0])
    grids = sorted(set(video.tolist()))
    assert len(grids) == 4 and int(grids[0]) == start
    for k, t in enumerate(grids):
        assert t == start + int(k * per_grid * rate), f"frames at {k * per_grid} s and audio at that second differ"


def test_qwen3_positions_are_the_models_own_per_row_in_mixed_batches(tiny_qwen3_omni):
    """Row by row, the positions build_inputs computes equal Qwen3-Omni's own rope index with the row's layout."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen3_omni)
    model = QWEN3_OMNI.thinker_class().from_pretrained(tiny_qwen3_omni).eval()
    still = StudentSample("q?", ["a", "b", "c", "d"], _frames(1), _audio(3.0), frames_are_video=False)
    silent = StudentSample("q?", ["a", "b", "c", "d"], _frames(seed=2), None, duration=10.0)
    samples = [_clip(10.0), still, silent, StudentSample("q?", ["a", "b"], None, _audio(4.0))]
    aligned = [True, False, False, False]
    batch = assert_positions_are_the_models(model, processor, samples, aligned,
                                            ["<think>t</think><answer>A</answer>"] * len(samples))
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_qwen3_sft_step_trains_experts_and_routers_adds_the_router_loss_and_leaves_encoders(
        tiny_qwen3_omni, corpus, tmp_path):
    """MoE split: experts and routers are trained, the router's load-balancing loss is in the SFT loss
    (logged as aux_loss), the frozen encoders do not move."""
    from training.sft import build_sft_trainer

    config = load_config(TINY, [f"model={tiny_qwen3_omni}", f"corpus={corpus}", f"output_dir={tmp_path}",
                                "sft.max_steps=1", "sft.save_steps=100", "sft.learning_rate=1e-2"])
    trainer = build_sft_trainer(config, str(tiny_qwen3_omni), tmp_path / "sft")
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert any(".mlp.experts." in k for k in moved) and any(".mlp.gate." in k for k in moved), sorted(moved)[:8]
    assert not any(k.startswith(("model.audio_tower.", "model.visual.")) for k in moved)
    assert all(not p.requires_grad for m in QWEN3_OMNI.encoder_modules(trainer.model) for p in m.parameters())
    logged = [r for r in read_metrics(tmp_path / "sft" / "metrics.jsonl") if "loss" in r]
    assert logged and all(r["aux_loss"] > 0 for r in logged), logged


@pytest.mark.slow
def test_cli_qwen3_student_trains_exports_and_evaluates(tiny_qwen3_omni, corpus, synthetic_data, tmp_path, capsys):
    """The whole path with a tiny Qwen3-Omni student, through the commands a user runs (each command's main,
    in this process: its imports are done)."""

    def run(module: str, *argv: str) -> str:
        capsys.readouterr()
        importlib.import_module(module).main(list(argv))
        return capsys.readouterr().out

    out = tmp_path / "run"
    run("training.sft_then_grpo", "--config", str(TINY), "--model", str(tiny_qwen3_omni), "--corpus", str(corpus),
        "--output-dir", str(out), "grpo.beta=0.01", "sft.max_steps=1", "grpo.max_steps=1")
    grpo = read_metrics(out / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in grpo if "rewards/accuracy_reward/mean" in r] == [1]
    assert all(r["aux_loss"] > 0 for r in grpo if "loss" in r), "the router loss is in the GRPO loss"
    final = out / "grpo" / "final"
    assert json.loads((final / "config.json").read_text())["model_type"] == QWEN3_OMNI.thinker_model_type

    export = tmp_path / "export"
    printed = run("evaluation.export_student", "--model", str(final), "--out", str(export))
    assert QWEN3_OMNI.full_architecture in printed
    full = json.loads((export / "config.json").read_text())
    assert full["architectures"] == [QWEN3_OMNI.full_architecture] and full["enable_audio_output"] is False
    assert not (export / "spk_dict.pt").exists()
    assert full["thinker_config"]["text_config"]["output_router_logits"] is False, "no router loss in generate"

    report_dir = tmp_path / "eval"
    run("evaluation.evaluate", "--model", str(export), "--benchmark", "manifest", "--data",
        str(synthetic_data / "manifest.jsonl"), "--modalities", "av", "--limit", "1", "--out", str(report_dir),
        "--max-new-tokens", "6", "--device", "cpu", "--quiet")
    report = json.loads((report_dir / "report.json").read_text())
    assert report["n_items"] == 1 and report["settings"]["av"]["n"] == 1


@pytest.mark.slow
def test_vllm_serves_the_exported_tiny_qwen3_student(synthetic_data, tmp_path):
    """vLLM (its CPU build in .venv-vllm) serves a tiny Qwen3-Omni student's export and answers the
    evaluator's request (8 frames as a video, the audio, the question) with its own Qwen3-Omni code."""
    import openai

    from evaluation.benchmarks import load_manifest
    from evaluation.evaluate import load_item_media, make_sample
    from student.export import export_student
    from student.served import api_messages, suppress_bias
    from training.tiny_models import build_qwen3_omni

    python = project_python()
    if python is None:
        pytest.skip("no vLLM environment (.venv-vllm: make vllm-env)")
    student = build_qwen3_omni(tmp_path / "student", vllm=True)  # head_dim 64: vLLM's CPU attention takes it
    export = export_student(student, tmp_path / "export")
    argv = find_launcher().serve(str(export)) + [
        "--served-model-name", "student", "--port", str(port := free_port()), "--max-model-len", "4096",
        "--limit-mm-per-prompt", '{"image":8,"audio":1,"video":1}', "--enforce-eager"]
    env = {**server_env(gpus=None), "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    with VllmServer("student", argv, port, model="student", log_path=tmp_path / "vllm.log", env=env,
                    ready_timeout_s=900) as server:
        item = load_manifest(synthetic_data / "manifest.jsonl")[0]
        # the separate layout: frames as a video and the audio as its own part (this server has no
        # --trust-request-mm-kwargs, which the aligned clip needs; tests/test_real_vllm.py covers that layout)
        messages = api_messages(make_sample(item, load_item_media(item), "av"), layout="separate")
        assert [p["type"] for p in messages[-1]["content"]] == ["video_url", "input_audio", "text"]
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        reply = client.chat.completions.create(model="student", messages=messages, max_tokens=8, temperature=0,
                                               logit_bias=suppress_bias(str(student)))
        assert reply.choices[0].message.content and reply.usage.completion_tokens >= 1
        assert reply.usage.prompt_tokens > 300, "the frames and the audio were turned into tokens"
