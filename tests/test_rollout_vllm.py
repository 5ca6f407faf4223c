"""GRPO with ``grpo.rollout: vllm`` against real vLLM (``.venv-vllm``) on the tiny vLLM-servable student.

Two server starts for the first test: the trainer starts one itself, as ``run_grpo`` does, and the
module one more (``rollout_server``, as a user starts servers for ``grpo.rollout_urls``), which the
resumed run and EchoInk-R1's recipe (the second test) sample from. Three GRPO steps
whose every rollout comes from the engine (HF generation is made to fail; vLLM's ``/metrics`` counts
what it answered); vLLM builds the trainer's prompt token ids for an aligned clip; after each weight
sync the engine's greedy completion of a fixed prompt equals the policy's own, and before it (the
policy having moved) it does not; at step 0 the engine's sampling log-probs match the trainer's
within ``LOGP_TOL``; the server is killed before step 3, the stage stops with a clear message and
keeps checkpoint-2, and the same command, given a running server, resumes from it.

The server is behind the guard (issue 34): at step 1 requests without the run's secret, from this user
and (when the test runs as root) from ``nobody``, try to reload other weights, update weights, reset a
cache and sample; each gets 401, and the engine's greedy completion is still the policy's after them.
The secret never shows in ``ps``, the server's log, the stage's files (``config.yaml``,
``metrics.jsonl``, checkpoints) or the trainer's output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from serving.vllm_server import project_python
from tests.corpus_fixture import write_corpus
from training.runtime import read_metrics
from training.train_config import dump_config, load_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(project_python() is None, reason="no .venv-vllm: run `make vllm-env`")]

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"
NEW_TOKENS = 8
# Step 0: engine and trainer hold the same fp32 weights. |log p_engine - log p_trainer| per token was
# 0.022-0.025 here: 0.022-0.024 of it is the multimodal special tokens' probability mass in the
# tiny random model (about 2.3 %), which vLLM's processed log-probs renormalise away (logit_bias
# -100) and the trainer's log-probs keep; the rest is kernel rounding (< 3e-3). A trained model
# gives those tokens next to no mass.
LOGP_TOL = 0.05


def _server_requests(engine) -> float:
    """Requests vLLM has finished since it started (``vllm:request_success_total``, all reasons)."""
    request = urllib.request.Request(engine.roots[0] + "/metrics", headers=engine.headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def _attacks(weights: Path) -> list[tuple[str, dict]]:
    """Requests another process could send: other weights, a weight update, a cache reset, a rollout."""
    return [("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(weights)}}),
            ("/update_weights", {"update_info": {"names": [], "dtype_names": [], "shapes": []}}),
            ("/reset_prefix_cache", {}),
            ("/v1/chat/completions", {"model": "policy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})]


def _status_without_secret(root: str, route: str, body: dict) -> int:
    request = urllib.request.Request(root + route, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _status_as_nobody(root: str, route: str, body: dict) -> int | None:
    """The same request sent by another user (``nobody``, with curl); None where this test cannot switch
    users (not root, or no setpriv/curl)."""
    if os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("curl")):
        return None
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "-o",
                           "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                           "-d", json.dumps(body), root + route], capture_output=True, text=True, timeout=60)
    return int(done.stdout or 0)


def _files_with(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def vllm_tiny(tmp_path_factory) -> Path:
    """The tiny vLLM-servable student (``vllm-tiny``), the policy of both tests."""
    from training.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny"), seed=0, preset="vllm-tiny")["omni"]


@pytest.fixture(scope="module")
def rollout_server(vllm_tiny, tmp_path_factory):
    """A guarded dev-mode rollout server on an export of ``vllm_tiny``, started as the trainer starts its
    own; yields ``(base_url, secret)`` for ``grpo.rollout_urls`` and ``AVRT_ROLLOUT_SECRET``."""
    from serving.vllm_server import new_secret
    from training.rollout import start_rollout_server

    secret = new_secret()
    server = start_rollout_server(vllm_tiny, tmp_path_factory.mktemp("rollout-server"), secret, timeout_s=420)
    try:
        yield server.base_url, secret
    finally:
        server.stop()


def test_grpo_rollouts_from_vllm_stay_on_policy_and_survive_a_dead_server(synthetic_data, vllm_tiny, rollout_server,
                                                                         tmp_path, monkeypatch, capfd):
    from safetensors.torch import save_file
    from trl import GRPOTrainer

    from student.inputs import StudentSample, encode_prompt, generation_suppress_tokens, is_aligned
    from training import grpo
    from training.data import MediaLoader, load_corpus
    from training.encoders import thinker
    from training.grpo import AVGRPOTrainer, run_grpo
    from training.rollout import RolloutServerError, rollout_request
    from training.runtime import load_processor
    from training.weight_sync import changing_tensors

    model_dir = vllm_tiny
    corpus = write_corpus(synthetic_data, tmp_path / "corpus")
    table = corpus / "corpus" / "part-0.parquet"
    rows = pd.read_parquet(table)
    # clips of 4 s or more: 8 frames at up to 2 fps, which vLLM keeps (see training.rollout)
    rows[rows["duration"] >= 4.0].assign(split="train").to_parquet(table)
    out = tmp_path / "grpo"
    config = load_config(TINY, [f"model={model_dir}", f"corpus={corpus}", f"output_dir={tmp_path}", "grpo.beta=0",
                                "grpo.max_steps=3", "grpo.save_steps=1", "grpo.save_total_limit=1",
                                f"grpo.max_completion_length={NEW_TOKENS}", "grpo.rollout=vllm",
                                "grpo.learning_rate=1e-2"])  # big steps: the policy changes visibly
    processor = load_processor(model_dir)
    suppress = generation_suppress_tokens(processor)
    clip = MediaLoader(corpus, config.data)(load_corpus(corpus, config.data).iloc[0].to_dict())
    assert is_aligned(clip), "a clip in the aligned layout"
    # The weight check's fixed prompt is text only: with media, vLLM's encoders round differently from
    # transformers' (by up to ~5e-4 in a log-prob here), enough to swap two near-tied tokens of a tiny
    # random model, whereas the weights under test are the text model's.
    probe = StudentSample(clip.question, clip.choices)
    greedy = {"temperature": 0.0, "max_tokens": NEW_TOKENS}

    def policy_greedy(model) -> list[int]:
        prompt = encode_prompt(processor, probe)
        ids = prompt["input_ids"].view(1, -1)
        target = thinker(model)
        with torch.no_grad():
            out_ids = type(target).generate(target, input_ids=ids, attention_mask=torch.ones_like(ids),
                                            position_ids=prompt["position_ids"].unsqueeze(1),
                                            max_new_tokens=NEW_TOKENS, do_sample=False, suppress_tokens=suppress)
        return out_ids[0, ids.shape[1]:].tolist()

    def engine_prompt_ids(engine, sample) -> list[int]:
        """The prompt token ids vLLM built for ``sample``'s request (the aligned layout)."""
        body = {"model": engine.model, **rollout_request(sample, None, "aligned", n=1, sampling=greedy,
                                                          processor=processor)}
        request = urllib.request.Request(engine.urls[0] + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", **engine.headers})
        engine.requests_sent += 1
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["prompt_token_ids"]

    checks: list[tuple[int, list[int], list[int]]] = []  # (step, engine greedy, policy greedy) after each sync
    layout: list[bool] = []  # did vLLM build the trainer's prompt token ids for an aligned clip?
    stale: list[bool] = []  # before a sync: did the engine's greedy completion differ from the policy's?
    rollouts: list[int] = []  # steps whose rollouts came from the engine
    counted: dict[str, float] = {}
    kill_at_step = 2
    attack_at_step = 1
    refusals: dict[str, list[int | None]] = {}  # who -> the statuses their requests without the secret got
    run_secrets: list[str] = []  # each run's, for the leak checks
    ps_lines: list[str] = []  # every process's command line while the server ran

    def attack(engine, model) -> None:
        """Send ``_attacks`` without the secret, from this process and from another user."""
        weights = tmp_path / "other-weights"
        weights.mkdir(exist_ok=True)
        save_file({k: torch.randn_like(v).cpu() for k, v in changing_tensors(model).items()},
                  str(weights / "model.safetensors"))  # what a reload would swap in: random weights
        root = engine.roots[0]
        refusals["same user"] = [_status_without_secret(root, *a) for a in _attacks(weights)]
        refusals["nobody"] = [_status_as_nobody(root, *a) for a in _attacks(weights)]
        ps_lines.extend(subprocess.run(["ps", "-eo", "args=", "-ww"], capture_output=True, text=True).stdout.splitlines())
    original = AVGRPOTrainer._engine_rollouts

    def engine_greedy(engine) -> list[int]:
        return engine.generate([rollout_request(probe, None, "aligned", n=1, sampling=greedy,
                                                suppress_ids=suppress)])[0][0].ids

    def checked(self, num_generations):
        engine, step = self.rollout_engine, self.state.global_step
        training = self.model.training
        self.model.eval()
        if engine.secret not in run_secrets:
            run_secrets.append(engine.secret)
        if step == kill_at_step and not counted:  # the first run: the server dies now
            counted.update(sent=engine.requests_sent, served=_server_requests(engine))
            os.killpg(engine.server.process.pid, signal.SIGKILL)
            engine.server.process.wait()
        elif step > 0:
            stale.append(engine_greedy(engine) != policy_greedy(self.model))
        else:
            layout.append(engine_prompt_ids(engine, clip) == encode_prompt(processor, clip)["input_ids"].tolist())
        result = original(self, num_generations)  # syncs the weights, then samples the step's rollouts
        rollouts.append(step)
        if step == attack_at_step and not refusals:
            attack(engine, self.model)  # then the check below: the engine must still hold the policy's weights
        checks.append((step, engine_greedy(engine), policy_greedy(self.model)))
        self.model.train(training)
        return result

    def no_hf_generation(*args, **kwargs):
        raise AssertionError("the HF generate path was used with rollout=vllm")

    def even_tokens(prompts, completions, completion_ids, **kwargs) -> list[float]:
        """A reward that differs between a random model's completions (the project's need a trace)."""
        return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]

    monkeypatch.setattr(grpo, "reward_functions", lambda config: ([even_tokens], [1.0]))
    monkeypatch.setattr(AVGRPOTrainer, "_engine_rollouts", checked)
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", no_hf_generation)

    dump_config(config, out / "config.yaml")  # as training.sft_then_grpo writes it
    with pytest.raises(RolloutServerError, match=r"(?s)stopped at step 2.*exited with code.*checkpoint-2.*same command"):
        run_grpo(config, str(model_dir), out)
    first_log = (out / "rollout" / "server.log").read_text()
    assert (out / "checkpoint-2").is_dir() and not (out / "final").exists(), "the last checkpoint is kept"
    assert rollouts == [0, 1], "steps 0 and 1 sampled by the engine, then the server died"
    # sent before the kill: 2 rollouts (n = G each), 1 prompt-ids request, 3 greedy probes; vLLM counts sequences
    assert counted["sent"] == 2 + 1 + 3, counted
    assert counted["served"] == 2 * config.grpo.num_generations + 1 + 3, "every request was answered by vLLM"
    assert layout == [True], "vLLM's prompt token ids for an aligned clip differ from the trainer's"
    assert refusals["same user"] == [401] * 4, refusals
    if refusals["nobody"][0] is None:
        warnings.warn("not root (or no setpriv/curl): requests from another user were not tried", stacklevel=1)
    else:
        assert refusals["nobody"] == [401] * 4, refusals

    # the same command, given the server a user would start (grpo.rollout_urls and its secret): resumed from checkpoint-2
    url, server_secret = rollout_server
    monkeypatch.setenv("AVRT_ROLLOUT_SECRET", server_secret)
    resumed = config.model_copy(update={"grpo": config.grpo.model_copy(update={"rollout_urls": [url]})})
    final = run_grpo(resumed, str(model_dir), out)
    assert final.is_dir() and rollouts == [0, 1, 2]
    assert [step for step, _, _ in checks] == [0, 1, 2]
    for step, engine_ids, policy_ids in checks:
        assert engine_ids == policy_ids, f"step {step}: the engine does not hold the policy's weights"
    assert any(stale), "the policy changed between steps (else the check above could not fail)"

    metrics = [r for r in read_metrics(out / "metrics.jsonl") if "sampling/sampling_logp_difference/mean" in r]
    first = metrics[0]
    assert first["step"] == 1, "step 0's rollouts (before any update) are logged at step 1"
    assert first["sampling/sampling_logp_difference/mean"] < LOGP_TOL, first
    assert first["sampling/sampling_logp_difference/max"] < LOGP_TOL, first
    assert all("rollout/sync_seconds" in r for r in metrics)
    assert any(r["grad_norm"] > 0 for r in metrics), "the policy was updated"

    assert len(run_secrets) == 2 and len(set(run_secrets)) == 2 and all(len(s) >= 32 for s in run_secrets), \
        "a fresh secret per run"
    assert any("avrt_guard.RolloutGuard" in line for line in ps_lines), "ps saw the guarded server"
    printed = "".join(capfd.readouterr())
    for secret in run_secrets:
        assert not any(secret in line for line in ps_lines), "the secret shows in ps"
        assert secret not in first_log and not _files_with(out, secret), "the secret was written to disk"
        assert secret not in printed, "the secret was printed"


def test_echoink_r1_recipe_samples_its_image_and_audio_rollouts_from_vllm(vllm_tiny, rollout_server, tmp_path,
                                                                         monkeypatch):
    """EchoInk-R1's recipe as documented (configs/recipes/echoink-r1.yaml, AVQA-R1-6K as published) with
    ``grpo.rollout=vllm`` and a running server (``grpo.rollout_urls``; the first test's policy left its
    weights there: the first sync replaces every tensor this recipe trains, the encoders' included):
    2 GRPO steps whose rollouts all come from the engine, each request an image,
    an audio and the recipe's prompt, for which vLLM builds the trainer's own prompt token ids; the
    encoders are not frozen in this recipe, so their weights reach the engine too."""
    from trl import GRPOTrainer

    from student.inputs import encode_prompt
    from tests.published_layouts import write_avqa_r1_6k
    from training.data import load_rows, media_loader
    from training.grpo import AVGRPOTrainer
    from training.rollout import rollout_request
    from training.runtime import load_processor
    from training.sft_then_grpo import main
    from training.weight_sync import changing_tensors

    model_dir = vllm_tiny
    url, secret = rollout_server
    monkeypatch.setenv("AVRT_ROLLOUT_SECRET", secret)
    data = write_avqa_r1_6k(tmp_path / "data", n=2)
    size = ["grpo.max_steps=2", "grpo.num_generations=2", "grpo.per_device_train_batch_size=2",
            f"grpo.max_completion_length={NEW_TOKENS}", "grpo.logging_steps=1", "precision=fp32",
            "activation_checkpointing=false"]
    argv = ["--config", str(ROOT / "configs" / "recipes" / "echoink-r1.yaml"), "--model", str(model_dir),
            "--data", str(data), "--output-dir", str(tmp_path / "run"), "grpo.rollout=vllm", f"grpo.rollout_urls=[{url}]",
            *size]
    config = load_config(argv[1], [f"model={model_dir}", f"data.path={data}", *size])
    processor = load_processor(model_dir)
    sample = media_loader(config)(load_rows(config.data).frame.iloc[0].to_dict())

    bodies: list[dict] = []
    prompt_ids: list[bool] = []
    synced: list[set[str]] = []
    original = AVGRPOTrainer._engine_rollouts

    def recorded(self, num_generations):
        engine = self.rollout_engine
        if not prompt_ids:  # what vLLM builds from the recipe's request, against the trainer's prompt
            body = {"model": engine.model, **rollout_request(sample, None, "aligned", n=1,
                                                              sampling={"max_tokens": 1}, processor=processor)}
            request = urllib.request.Request(engine.urls[0] + "/chat/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json", **engine.headers})
            with urllib.request.urlopen(request, timeout=120) as response:
                prompt_ids.append(json.loads(response.read())["prompt_token_ids"]
                                  == encode_prompt(processor, sample)["input_ids"].tolist())
        generate = engine.generate

        def capture(requests):
            bodies.extend(requests)
            return generate(requests)

        engine.generate = capture
        try:
            return original(self, num_generations)
        finally:
            engine.generate = generate

    def no_hf_generation(*args, **kwargs):
        raise AssertionError("the HF generate path was used with rollout=vllm")

    sync = changing_tensors

    def changing(model, *args, **kwargs):
        tensors = sync(model, *args, **kwargs)
        synced.append(set(tensors))
        return tensors

    monkeypatch.setattr(AVGRPOTrainer, "_engine_rollouts", recorded)
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", no_hf_generation)
    monkeypatch.setattr("training.weight_sync.changing_tensors", changing)
    main(argv)

    assert (tmp_path / "run" / "grpo" / "final").is_dir()
    assert len(bodies) == 2, "2 steps of one prompt (2 completions a step = G), each one request of n = G"
    for body in bodies:
        parts = [p["type"] for p in body["messages"][-1]["content"]]
        assert parts == ["image_url", "input_audio", "text"], parts
        assert body["messages"][-1]["content"][-1]["text"].endswith("within the <answer> </answer> tags.")
        assert body["n"] == 2 and body["top_p"] == 0.95
    assert prompt_ids == [True], "vLLM's prompt token ids for the image + audio request differ from the trainer's"
    assert any(any("audio_tower" in name for name in names) and any("visual" in name for name in names)
               for names in synced), "the unfrozen encoders' weights reach the engine"
