"""More than one process: the launch lines start what they promise, DeepSpeed accepts our configs, and a
2-process CPU run (torchrun, gloo) trains, writes once, keeps the encoder cache per rank and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from training.runtime import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in ACCELERATE if "DEEPSPEED" in p.read_text()], ids=lambda p: p.name)
def test_deepspeed_configs_pass_deepspeeds_own_checks(path):
    """The DeepSpeed config ``accelerate launch`` builds from ours, with the trainer's batch values filled in,
    is accepted by DeepSpeed's own config parser (batch arithmetic, ZeRO fields, precision)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
    from trl import GRPOConfig, SFTConfig

    from training.memory import MemoryPlan
    from training.runtime import trl_config
    from training.train_config import load_config

    launch = load_config_from_file(str(path))
    settings = launch.deepspeed_config
    plugin = DeepSpeedPlugin(zero_stage=settings["zero_stage"], gradient_clipping=settings["gradient_clipping"],
                             offload_optimizer_device=settings["offload_optimizer_device"],
                             offload_param_device=settings["offload_param_device"],
                             zero3_init_flag=settings["zero3_init_flag"])
    plugin.set_mixed_precision(launch.mixed_precision)
    config = load_config(ROOT / "configs" / "recipes" / "avrt.yaml")
    for trl_class, stage in ((SFTConfig, config.sft), (GRPOConfig, config.grpo)):
        plan = MemoryPlan(False, stage.per_device_train_batch_size, stage.gradient_accumulation_steps, None, None, "")
        args = trl_config(trl_class, stage, config.model_copy(update={"precision": "bf16"}), Path("/tmp/unused"),
                          plan)
        filled = HfTrainerDeepSpeedConfig(json.loads(json.dumps(plugin.deepspeed_config, default=str)))
        filled.trainer_config_process(args)
        parsed = DeepSpeedConfig(filled.config)
        assert parsed.zero_optimization_stage == settings["zero_stage"] == 2
        assert parsed.train_micro_batch_size_per_gpu == stage.per_device_train_batch_size
        assert parsed.gradient_accumulation_steps == stage.gradient_accumulation_steps
        assert parsed.bfloat16_config.enabled and parsed.gradient_clipping == 1.0
        assert parsed.zero_config.offload_optimizer.device == settings["offload_optimizer_device"]


@pytest.mark.slow
def test_accelerate_launch_line_starts_the_processes_it_promises(tmp_path):
    """The docs' line `accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes N`
    starts N ranks (with `--cpu` alone, accelerate starts one process: the docs use torchrun on CPU)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os; print('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n")
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs/accelerate/multi_gpu.yaml"), "--num_processes", "2",
                           "--main_process_port", str(free_port()), str(probe)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("rank")) == ["rank 0 of 2",
                                                                                         "rank 1 of 2"]


@pytest.mark.slow
def test_two_processes_train_write_once_and_resume_after_a_kill(tiny_models, corpus, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), str(ROOT / "tests" / "dist_worker.py"),
               "--config", str(TINY), "--model", str(tiny_models["omni"]), "--corpus", str(corpus),
               "--output-dir", str(out), "sft.max_steps=3", "sft.save_steps=1", "sft.per_device_train_batch_size=2",
               "grpo.max_steps=2", "grpo.save_steps=1", "grpo.per_device_train_batch_size=4",
               "grpo.max_completion_length=8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVRT_TEST_OUT": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(command, env={**env, "AVRT_TEST_KILL_AT": "2"}, cwd=ROOT, capture_output=True, text=True,
                            timeout=400)
    assert killed.returncode != 0
    sft = out / "sft"
    assert (sft / "checkpoint-2").is_dir() and not (sft / "final").exists(), killed.stderr[-3000:]

    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("summary: sft ->") == 1, "rank 0 alone prints the summary"
    assert done.stdout.count("[sft] resuming from checkpoint-2") == 1
    assert [r["step"] for r in read_metrics(sft / "metrics.jsonl") if "loss" in r] == [1, 2, 3], "no duplicates"
    grpo = out / "grpo"
    assert [r["step"] for r in read_metrics(grpo / "metrics.jsonl") if "loss" in r] == [1, 2]
    for stage in (sft, grpo):
        assert (stage / "final" / "model.safetensors").exists() and not list(stage.glob("checkpoint-*"))
    for stage_name, steps in (("sft", 3), ("grpo", 2)):
        ranks = [json.loads((tmp_path / f"counts-{stage_name}-rank{r}.json").read_text()) for r in (0, 1)]
        for counts in ranks:  # both ranks trained; each encoded its own prompts (samples) once per step
            assert counts["steps"] == steps and counts["prepared"] > 0, ranks
            assert counts["visual"] == counts["audio"] == counts["prepared"], ranks
            assert counts["outputs_requiring_grad"] == 0


@pytest.mark.slow
def test_two_processes_sample_from_shared_rollout_servers_after_one_push_per_step(tiny_models, corpus, tmp_path):
    """grpo.rollout=vllm with 2 ranks (torchrun, gloo) and a shared server (the scripted one, refusing requests
    without the secret that every rank reads from AVRT_ROLLOUT_SECRET): every rank samples its own prompts
    from it; rank 0 alone pushes the weights, once per step, before any rank samples."""
    from serving.vllm_server import SECRET_ENV, new_secret
    from tests.scripted_server import Reply, ScriptedServer, rollout_answer
    from training.runtime import load_processor

    tokenizer = load_processor(tiny_models["omni"]).tokenizer
    ids = tokenizer("<think>red</think><answer>A</answer><|im_end|>", add_special_tokens=False)["input_ids"]

    secret = new_secret()
    with ScriptedServer(api_key=secret) as server:
        server.set_handler("policy", lambda request: Reply(body=rollout_answer(*[(ids, [-1.0] * len(ids))] * request["n"])))
        sampled_before_push: list[int] = []  # chat requests the server had answered at each weight push
        server.set_route("/collective_rpc", lambda body: sampled_before_push.append(len(server.requests)) or Reply())
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(free_port()), str(ROOT / "tests" / "dist_worker.py"),
                   "--config", str(TINY), "--stages", "grpo", "--model", str(tiny_models["omni"]),
                   "--corpus", str(corpus), "--output-dir", str(tmp_path / "run"), "grpo.max_steps=2",
                   "grpo.per_device_train_batch_size=4", "grpo.beta=0", "grpo.rollout=vllm",
                   f"grpo.rollout_urls=[{server.url}]", "grpo.rollout_weight_sync=files"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AVRT_TEST_OUT": str(tmp_path), "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", SECRET_ENV: secret}
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        requests = list(server.requests)
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.counts["unauthorized"] == 2, "only each rank's guard check came without the secret"
    ranks = [json.loads((tmp_path / f"counts-grpo-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(counts["steps"] == 2 and counts["prepared"] == 2 for counts in ranks), ranks  # 1 prompt a step each
    assert len(requests) == 2 * 2 and all(r["n"] == 4 for r in requests), "each rank's prompt, each step, n = G"
    assert sampled_before_push == [0, 2], "one push per step, before either rank sampled that step"
