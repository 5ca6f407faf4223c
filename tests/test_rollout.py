"""The vLLM rollout engine's logic against the scripted server: requests, parsing, weight sync, failures,
and a GRPO step whose completions all come from the engine (the real-vLLM tests: test_rollout_vllm.py)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from serving.vllm_server import GUARD_DIR, GUARD_FLAGS, SECRET_ENV, new_secret
from student.inputs import StudentSample
from tests.corpus_fixture import write_corpus
from tests.scripted_server import Reply, ScriptedServer, rollout_answer
from training.rollout import (
    Rollout,
    RolloutEngine,
    RolloutServerError,
    parse_rollouts,
    rollout_request,
)
from training.train_config import load_config
from training.weight_sync import export_weights

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


def _sample(duration: float = 4.0, audio_s: float = 4.0) -> StudentSample:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)) for _ in range(8)]
    audio = (rng.standard_normal(int(16000 * audio_s)) * 0.1).astype(np.float32)
    return StudentSample("Which colour?", ["red", "green", "blue", "grey"], frames, audio, duration=duration)


def _decode(clip: bytes, tmp: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    path = tmp / "clip.mkv"
    path.write_bytes(clip)
    video = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                           capture_output=True, check=True).stdout
    audio = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-"],
                           capture_output=True, check=True).stdout
    return np.frombuffer(video, np.uint8).reshape(-1, *shape, 3), np.frombuffer(audio, np.float32)


def test_aligned_request_is_one_lossless_clip_with_its_sound(tiny_models, tmp_path):
    from student.inputs import frame_kwargs
    from training.runtime import load_processor

    sample, processor = _sample(), load_processor(tiny_models["omni"])
    body = rollout_request(sample, None, "aligned", n=4, sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 8},
                           suppress_ids=[5, 7], processor=processor)
    (video, text) = body["messages"][-1]["content"]
    assert video["type"] == "video_url" and text["type"] == "text" and "Which colour?" in text["text"]
    url = video["video_url"]["url"]
    assert url.startswith("data:video/x-matroska;base64,")
    assert body["mm_processor_kwargs"] == {**frame_kwargs(processor, sample), "use_audio_in_video": True,
                                           "fps": 2.0, "second_per_grid_ts": [1.0]}, "the trainer's frame settings"
    assert (body["n"], body["logprobs"], body["return_token_ids"], body["max_tokens"]) == (4, True, True, 8)
    assert body["logit_bias"] == {"5": -100.0, "7": -100.0}
    frames, audio = _decode(base64.b64decode(url.split(",", 1)[1]), tmp_path, (32, 48))
    assert np.array_equal(frames, np.stack([np.asarray(f) for f in sample.frames])), "pixels changed"
    assert np.array_equal(audio[: len(sample.audio)], sample.audio), "audio samples changed"


def test_separate_layout_and_short_audio_send_frames_and_audio_apart():
    for sample, layout in ((_sample(), "separate"), (_sample(duration=10.0, audio_s=3.0), "aligned")):
        body = rollout_request(sample, "Be brief.", layout, n=2, sampling={"temperature": 1.0})
        kinds = [p["type"] for p in body["messages"][-1]["content"]]
        assert kinds == ["video_url", "input_audio", "text"] and "mm_processor_kwargs" not in body, "no processor given"
        assert body["messages"][-1]["content"][0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
        assert body["messages"][0]["role"] == "system"


def test_parse_rollouts_reads_ids_and_logprobs_and_refuses_other_answers():
    rollouts = parse_rollouts(rollout_answer(([3, 4], [-0.5, -1.0]), ([5], [-2.0])))
    assert rollouts == [Rollout([3, 4], [-0.5, -1.0]), Rollout([5], [-2.0])]
    with pytest.raises(RolloutServerError, match="token_ids"):
        parse_rollouts({"choices": [{"index": 0, "message": {"content": "hi"}}]})


def test_engine_spreads_requests_syncs_weights_and_reports_a_dead_server(tiny_models, tmp_path):
    """Against two servers that refuse any request without the secret (as the guard does): every request
    of the engine carries it."""
    from training.runtime import load_student

    config = load_config(TINY, [f"model={tiny_models['omni']}"])
    model = load_student(tiny_models["omni"], config)
    secret = new_secret()
    with ScriptedServer(api_key=secret) as one, ScriptedServer(api_key=secret) as two:
        for server in (one, two):
            server.set_handler("policy", lambda request: Reply(body=rollout_answer(([1, 2], [-0.1, -0.2]))))
        engine = RolloutEngine([one.url, two.url], sync_dir=tmp_path / "sync", secret=secret)
        assert engine.model == "policy", "the served name comes from /v1/models"
        assert engine.check_guarded() == [], "both refuse a control request without the secret"
        answers = engine.generate([{"messages": [], "n": 1}] * 6)
        assert [a[0].ids for a in answers] == [[1, 2]] * 6 and one.counts["policy"] + two.counts["policy"] == 6
        assert one.counts["policy"] and two.counts["policy"], "requests are spread over the replicas"
        seconds = engine.sync(model)
        assert seconds > 0
        for server in (one, two):
            paths = [p for p, _ in server.other_posts]
            assert paths == ["/collective_rpc", "/reset_encoder_cache", "/reset_prefix_cache", "/reset_mm_cache"]
            rpc = server.other_posts[0][1]
            assert rpc["method"] == "reload_weights" and Path(rpc["kwargs"]["weights_path"]).is_dir()
            assert server.counts["unauthorized"] == 1, "only the guard check's probe came without the secret"
    written = load_file(str(Path(rpc["kwargs"]["weights_path"]) / "model.safetensors"))
    on_disk = {"thinker." + k: v for k, v in load_file(str(tiny_models["omni"] / "model.safetensors")).items()}
    assert set(written) < set(on_disk), "checkpoint names in the full-model naming (what vLLM loads)"
    assert all(torch.equal(written[k], on_disk[k]) for k in written), "the model's own values"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(t.numel() for t in written.values()) == trainable, "exactly the tensors training can change"
    assert not any(".audio_tower." in k or ".visual." in k for k in written), "frozen encoders are not sent"
    everything = load_file(str(export_weights(model, tmp_path / "all", everything=True) / "model.safetensors"))
    assert set(everything) == set(on_disk), "everything: the whole checkpoint"
    engine.close()
    assert not (tmp_path / "sync").exists()
    # the servers are gone: a clear error naming them, after the client's retries
    dead = RolloutEngine([one.url], model="policy", retries=0, timeout_s=5)
    with pytest.raises(RolloutServerError, match="rollout server"):
        dead.generate([{"messages": []}])
    with pytest.raises(RolloutServerError, match="unreachable for the weight update"):
        dead.load_weights(tmp_path)


@pytest.fixture(scope="module")
def corpus(synthetic_data, tmp_path_factory) -> Path:
    return write_corpus(synthetic_data, tmp_path_factory.mktemp("corpus"), n=3)


def test_grpo_step_takes_every_completion_from_the_engine(tiny_models, corpus, tmp_path):
    """One GRPO step with rollout=vllm on the scripted server: no HF generate, one request (n=G) per
    prompt, a weight sync before it, TRL's importance-sampling metrics logged."""
    from training.grpo import build_grpo_trainer
    from training.runtime import load_processor

    tokenizer = load_processor(tiny_models["omni"]).tokenizer
    ids = tokenizer("<think>red</think><answer>A</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    config = load_config(TINY, [f"model={tiny_models['omni']}", f"corpus={corpus}", f"output_dir={tmp_path}",
                                "grpo.beta=0", "grpo.max_steps=1", "grpo.rollout=vllm"])
    with ScriptedServer() as server:
        server.set_handler("policy", lambda request: Reply(body=rollout_answer(*[(ids, [-1.0] * len(ids))] * request["n"])))
        engine = RolloutEngine([server.url], sync_dir=tmp_path / "sync")
        trainer = build_grpo_trainer(config, str(tiny_models["omni"]), tmp_path / "grpo", engine)

        def no_hf_generate(*args, **kwargs):
            raise AssertionError("HF generate was called")

        trainer.model.generate = no_hf_generate
        trainer.train()
        requests = list(server.requests)
        posts = [p for p, _ in server.other_posts]
    assert trainer.state.global_step == 1
    assert len(requests) == 1 and requests[0]["n"] == config.grpo.num_generations, "one request of G per prompt"
    assert requests[0]["max_tokens"] == config.grpo.max_completion_length
    assert posts == ["/collective_rpc", "/reset_encoder_cache", "/reset_prefix_cache", "/reset_mm_cache"], \
        "weights synced before the rollout"
    logged = {k for record in trainer.state.log_history for k in record}
    assert {"sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
            "sampling/importance_sampling_ratio/max", "rollout/sync_seconds"} <= logged


def test_sigterm_runs_the_cleanup_that_stops_a_rollout_server(tmp_path):
    """A trainer stopped with SIGTERM (a scheduler's stop) still runs the ExitStack that stops its server."""
    code = (f"import os, signal, time\nfrom contextlib import ExitStack\nfrom serving.vllm_server import sigterm_as_exit\n"
            f"with ExitStack() as stack:\n    stack.enter_context(sigterm_as_exit())\n"
            f"    stack.callback(lambda: open({str(tmp_path / 'stopped')!r}, 'w').close())\n"
            f"    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert (tmp_path / "stopped").exists(), "the server's stop did not run"


def test_several_processes_need_shared_servers_and_whole_weights(tiny_models, monkeypatch, tmp_path):
    from contextlib import ExitStack

    from training.grpo import open_rollout_engine

    config = load_config(TINY, [f"model={tiny_models['omni']}", "grpo.rollout=vllm"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with ExitStack() as stack, pytest.raises(ValueError, match="give grpo.rollout_urls"):
        open_rollout_engine(config, str(tiny_models["omni"]), tmp_path, stack)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    config = load_config(TINY, [f"model={tiny_models['omni']}", "grpo.rollout=vllm", "grpo.rollout_urls=[http://x:1/v1]"])
    with ExitStack() as stack, pytest.raises(ValueError, match="ZeRO-3"):
        open_rollout_engine(config, str(tiny_models["omni"]), tmp_path, stack)


def test_given_servers_must_refuse_requests_without_the_secret(tiny_models, monkeypatch, tmp_path, capsys):
    """grpo.rollout_urls: the trainer reads the servers' secret from grpo.rollout_secret_env and checks at
    start-up that each server refuses a control request without it; an open server stops the run unless
    grpo.rollout_allow_unguarded, which warns."""
    from contextlib import ExitStack

    from training.grpo import open_rollout_engine

    def engine_for(url: str, *overrides: str):
        config = load_config(TINY, [f"model={tiny_models['omni']}", "grpo.rollout=vllm", f"grpo.rollout_urls=[{url}]",
                                    "grpo.rollout_secret_env=TEST_ROLLOUT_SECRET", *overrides])
        with ExitStack() as stack:
            return open_rollout_engine(config, str(tiny_models["omni"]), tmp_path, stack)

    secret = new_secret()
    with ScriptedServer(api_key=secret) as server:  # guarded, then (api_key None) open to anyone
        server.set_handler("policy", lambda request: Reply(body=rollout_answer(([1], [-0.1]))))
        monkeypatch.delenv("TEST_ROLLOUT_SECRET", raising=False)
        with pytest.raises(RolloutServerError, match="set TEST_ROLLOUT_SECRET"):
            engine_for(server.url)
        monkeypatch.setenv("TEST_ROLLOUT_SECRET", new_secret())
        with pytest.raises(RolloutServerError, match="refused /v1/models: HTTP 401 .*the run's secret"):
            engine_for(server.url)
        monkeypatch.setenv("TEST_ROLLOUT_SECRET", secret)
        assert engine_for(server.url).generate([{"messages": []}])[0][0].ids == [1]
        assert server.other_posts == [] and server.counts["unauthorized"] == 2, "the wrong secret's, the probe"
        server.api_key = None
        with pytest.raises(RolloutServerError, match=r"answered a control request without the run's secret \(POST "
                                                     r"/collective_rpc: HTTP 200\).*grpo.rollout_allow_unguarded") as err:
            engine_for(server.url)
        assert server.other_posts == [("/collective_rpc", {})], "the probe names no method: it runs nothing"
        capsys.readouterr()
        monkeypatch.delenv("TEST_ROLLOUT_SECRET")
        assert engine_for(server.url, "grpo.rollout_allow_unguarded=true").generate([{"messages": []}])
        said = capsys.readouterr().out
    assert f"warning: rollout server {server.url[:-3]} answered a control request without" in said
    assert "running anyway (grpo.rollout_allow_unguarded: true)" in said
    assert secret not in str(err.value) + said


def test_the_trainers_own_server_is_guarded_with_a_secret_it_never_shows(tiny_models, monkeypatch, tmp_path):
    """The trainer's server: dev mode, the guard's middleware, the secret in its environment only."""
    from serving.vllm_server import VllmServer
    from training.rollout import start_rollout_server

    monkeypatch.setattr(VllmServer, "__enter__", lambda self: self)  # not started: its command and environment
    secret = new_secret()
    server = start_rollout_server(tiny_models["omni"], tmp_path, secret, vllm_python=sys.executable)
    command, env = server.command(), server.process_env()
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and command[-2:] == list(GUARD_FLAGS) and "--host" in command
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert env[SECRET_ENV] == secret and env["PYTHONPATH"].split(os.pathsep)[0] == str(GUARD_DIR)
    assert secret not in " ".join(command) and secret not in repr(server)
