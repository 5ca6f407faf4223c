"""GRPO rollouts from vLLM servers, with the policy's weights pushed to them after every optimizer step.

``grpo.rollout: vllm`` makes ``training.grpo.AVGRPOTrainer`` sample every completion from vLLM
(``RolloutEngine``) instead of Hugging Face ``generate``; the trainer still computes the policy's
and the reference model's log-probs itself, and TRL's truncated importance sampling corrects for
the difference between the engine's sampling log-probs and its own.

**A request** (``rollout_request``) carries the sample's own frames, audio and question, as the
policy sees them (``student.served.chat_request`` with the run's ``av_layout``), ``n`` = G,
GRPO's temperature, top_p and completion length, ``logit_bias`` -100 on the multimodal special
tokens (the HF path suppresses them too), and asks for the sampled token ids (``return_token_ids``)
and their log-probs. Layouts, next to the trainer's:

* ``aligned`` clips (the default): the trainer interleaves audio and frames on one TMRoPE time axis
  (``<|vision_bos|><|audio_bos|>``, frame grids and audio in 2 s chunks). vLLM does the same for a
  video with its own sound track and ``mm_processor_kwargs={"use_audio_in_video": true}``: the
  request sends the frames and the audio as one lossless Matroska clip (FFV1 + float PCM: vLLM
  decodes the same pixels and samples, bit for bit) at the clip's frame rate ``len(frames) /
  duration``, with the trainer's frame size, ``fps`` and ``second_per_grid_ts`` (without it vLLM
  interleaves by 1 s per frame grid). vLLM's prompt token ids then equal the trainer's (checked on a
  6 s clip).
* ``separate`` (and audio that does not cover its clip): the frames as a ``video/jpeg`` frame list,
  the audio as an ``input_audio`` float WAV after it, as in the trainer: the same token ids too.

What remains different: vLLM's Qwen2.5-Omni processing re-samples the frames of a video file at its
video processor's default 2 fps whatever the request says, so a clip shorter than 4 s (8 frames at
more than 2 fps) reaches vLLM with fewer frames (6 of 8 for a 3 s clip; AVQA's 10 s clips keep all
8); and vLLM's kernels round differently from the trainer's. Both show in the logged mismatch
(``sampling/sampling_logp_difference/*``), which the importance-sampling correction is for.

**Weights**: after every optimizer step the policy's changing tensors reach every server before its
next rollout (``RolloutEngine.sync``), through files on tmpfs, CUDA IPC or NCCL
(``training.weight_sync``, ``grpo.rollout_weight_sync``).

**The guard**: those weight routes are vLLM's dev routes, which answer anyone who can reach the port
(and on a GPU unpickle what they are sent). Every request of the engine, to ``/v1`` and to the dev
routes, carries the run's secret (``Authorization: Bearer``, ``serving.vllm_server.auth_headers``),
and the servers refuse any request without it (``serving/guard/avrt_guard.py``): the trainer's own
server gets a fresh secret per run through its environment; servers the user starts read it from
their environment, and the trainer from ``grpo.rollout_secret_env``. Before training,
``RolloutEngine.check_guarded`` makes sure each server refuses a control request without it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.vllm_server import auth_headers
from student.served import chat_request, serve_flags, suppress_logit_bias
from training.weight_sync import IPC_SERVER_ENV, IPC_SERVER_FLAGS, FileSync, WeightSync

CACHE_RESETS = ("/reset_encoder_cache", "/reset_prefix_cache", "/reset_mm_cache")  # vLLM dev routes, after a reload
# what the guard check sends without the secret: a control route, with a body that runs nothing (no method)
GUARD_PROBE = "/collective_rpc"
REFUSED = (401, 403)
SECRET_HINT = " (it does not take the run's secret: see grpo.rollout_secret_env)"


class RolloutServerError(RuntimeError):
    """The rollout servers cannot give completions or take weights (the message says which and why)."""


@dataclass
class Rollout:
    """One sampled completion: its token ids (end-of-turn token included) and their sampling log-probs."""

    ids: list[int]
    logprobs: list[float]


def rollout_request(sample: Any, system: str | None, layout: str, *, n: int, sampling: dict[str, Any],
                    suppress_ids: Sequence[int] = (), processor: Any = None) -> dict[str, Any]:
    """The chat-completion body (without ``model``) that samples ``n`` completions for ``sample``.

    ``sampling``: ``temperature``, ``top_p``, ``max_tokens`` and optionally ``top_k``,
    ``repetition_penalty``; ``processor``: the trainer's, whose frame settings vLLM's processor then
    uses too (``student.served.processor_kwargs``).
    """
    body: dict[str, Any] = {**chat_request(sample, system, layout, processor),
                            "n": n, **sampling, "logprobs": True, "top_logprobs": 0, "return_token_ids": True,
                            "skip_special_tokens": False}
    if suppress_ids:
        body["logit_bias"] = suppress_logit_bias(suppress_ids)
    return body


def parse_rollouts(response: dict[str, Any]) -> list[Rollout]:
    """The ``n`` completions of a vLLM chat answer, in choice order."""
    out = []
    for choice in sorted(response.get("choices") or [], key=lambda c: c.get("index", 0)):
        ids = choice.get("token_ids")
        content = (choice.get("logprobs") or {}).get("content")
        if ids is None or content is None:
            raise RolloutServerError("the server's answer has no token_ids or logprobs: a rollout server must be "
                                     "vLLM with return_token_ids (0.32 was tested)")
        logprobs = [float("nan") if t.get("logprob") is None else float(t["logprob"]) for t in content]
        if len(logprobs) != len(ids):
            raise RolloutServerError(f"{len(ids)} token ids but {len(logprobs)} log-probs in one completion")
        out.append(Rollout(list(ids), logprobs))
    if not out:
        raise RolloutServerError("the server answered without choices")
    return out


# -- the servers ---------------------------------------------------------------------------------

def _server_root(url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port`` (vLLM's dev routes are not under ``/v1``)."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def refuses_strangers(root: str, timeout_s: float = 30.0) -> tuple[bool, int]:
    """Does the server at ``root`` refuse a control request that comes without the secret? With the
    status it answered. ``POST /collective_rpc {}`` names no method: an unguarded server runs nothing."""
    request = urllib.request.Request(root + GUARD_PROBE, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError) as err:
        raise RolloutServerError(f"rollout server {root} is unreachable: {err}") from None
    return status in REFUSED, status


class RolloutEngine:
    """Completions and weight updates against one or more vLLM servers serving the policy.

    Requests are spread over the replicas by ``teachers.client.ModelClient`` (fewest in flight first,
    retries with backoff); a server that stops answering raises ``RolloutServerError``. Every request
    carries ``secret`` (the servers' guard; None: no header).
    """

    def __init__(self, urls: Sequence[str], model: str | None = None, timeout_s: float = 600.0,
                 max_in_flight: int = 64, retries: int = 2, sync_dir: str | Path | None = None,
                 secret: str | None = None):
        if not urls:
            raise ValueError("RolloutEngine needs at least one server URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s, self.max_in_flight, self.retries = timeout_s, max_in_flight, retries
        self.secret = secret
        self.model = model or self.served_model()
        self.requests_sent = 0
        self.server = None  # the serving.vllm_server.VllmServer behind ``urls`` when the trainer started it
        # how weights reach the servers (training.weight_sync.weight_sync picks one from the config)
        self.weight_sync: WeightSync = FileSync(self, sync_dir)

    @property
    def roots(self) -> list[str]:
        """The servers' roots (``http://host:port``): vLLM's dev routes are not under ``/v1``."""
        return [_server_root(url) for url in self.urls]

    def _failed(self, what: str) -> RolloutServerError:
        """The error for a failure; names the exit code and log of a server started here that has died."""
        server = self.server
        if server is not None and server.exit_code() is not None:
            what += f" (the rollout server exited with code {server.exit_code()}; its log: {server.log_path})"
        return RolloutServerError(what)

    @property
    def headers(self) -> dict[str, str]:
        """What every request carries besides its body: the secret."""
        return auth_headers(self.secret)

    def served_model(self) -> str:
        """The model name the first server lists on ``/v1/models``."""
        request = urllib.request.Request(self.urls[0] + "/models", headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())["data"][0]["id"]
        except urllib.error.HTTPError as err:
            hint = SECRET_HINT if err.code in REFUSED else ""
            raise RolloutServerError(f"rollout server {self.urls[0]} refused /v1/models: HTTP {err.code}{hint}") from None
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise RolloutServerError(f"rollout server {self.urls[0]} does not list a model: {err}") from None

    def check_guarded(self, allow_unguarded: bool = False) -> list[str]:
        """Make sure every server refuses a control request without the secret. An open one stops the
        run (``RolloutServerError``) unless ``allow_unguarded``; returns the warnings for those allowed."""
        warnings = []
        for root in self.roots:
            refused, status = refuses_strangers(root)
            if refused:
                continue
            problem = (f"rollout server {root} answered a control request without the run's secret (POST "
                       f"{GUARD_PROBE}: HTTP {status}): anyone who can reach it can replace the policy's weights")
            if not allow_unguarded:
                raise RolloutServerError(f"{problem}. Start it behind the guard (docs/training.md, \"Guarding the "
                                         "rollout servers\"), or set grpo.rollout_allow_unguarded: true to run anyway")
            warnings.append(f"{problem}; running anyway (grpo.rollout_allow_unguarded: true)")
        return warnings

    def generate(self, bodies: Sequence[dict[str, Any]]) -> list[list[Rollout]]:
        """Send every request body at once; each answer's completions, in request order."""
        self.requests_sent += len(bodies)
        return asyncio.run(self._generate(list(bodies)))

    async def _generate(self, bodies: list[dict[str, Any]]) -> list[list[Rollout]]:
        from teachers.client import ModelCallError, ModelClient

        client = ModelClient(model=self.model, base_urls=self.urls, sampling={}, timeout_s=self.timeout_s,
                             max_in_flight=self.max_in_flight, retries=self.retries, api_key=self.secret)
        try:
            results = await asyncio.gather(*(client.request(body) for body in bodies), return_exceptions=True)
        finally:
            await client.close()
        out = []
        for result in results:
            if isinstance(result, ModelCallError):
                raise self._failed(f"rollout server(s) {', '.join(self.urls)} failed: {result}") from None
            if isinstance(result, BaseException):
                raise result
            out.append(parse_rollouts(result))
        return out

    def call(self, root: str, route: str, body: dict[str, Any] | None = None, method: str = "POST",
             what: str = "the weight update") -> Any:
        """One of vLLM's dev routes on the server at ``root``; its JSON answer. A refusal or an unreachable
        server is a ``RolloutServerError`` that names ``what`` was being done."""
        request = urllib.request.Request(root + route, method=method,
                                         headers={"Content-Type": "application/json", **self.headers},
                                         data=json.dumps(body or {}).encode() if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read().decode() or "null")
        except urllib.error.HTTPError as err:
            hint = {404: " (is it in dev mode? start it with VLLM_SERVER_DEV_MODE=1)",
                    401: SECRET_HINT, 403: SECRET_HINT}.get(err.code, "")
            raise self._failed(f"rollout server {root} refused {what} ({route}): HTTP {err.code}{hint}: "
                               f"{err.read()[:300]!r}") from None
        except (OSError, ValueError) as err:
            raise self._failed(f"rollout server {root} is unreachable for {what} ({route}): {err}") from None

    def reset_caches(self, root: str) -> None:
        """Drop the server's encoder, prefix and multimodal caches (after its weights changed).

        A weight reload empties the worker's encoder cache but not the scheduler's record of it (a
        repeated clip then crashes the engine: "Encoder cache miss"): reset both."""
        for route in CACHE_RESETS:
            answer = self.call(root, route)
            if isinstance(answer, dict) and answer.get("success") is False:
                raise RolloutServerError(f"rollout server {root}: {route} failed (requests still running?)")

    def load_weights(self, folder: str | Path) -> None:
        """Every server reloads its weights from ``folder`` (safetensors in checkpoint naming) and drops
        its caches."""
        for root in self.roots:
            self.call(root, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}})
            self.reset_caches(root)

    def sync(self, model) -> float:
        """Push ``model``'s changing weights to every server (``weight_sync``); returns the seconds it took."""
        started = time.perf_counter()
        self.weight_sync.push(model)
        return time.perf_counter() - started

    def close(self) -> None:
        """Release what the weight sync holds (the servers are not ours to stop here)."""
        self.weight_sync.close()


# -- a server of our own -------------------------------------------------------------------------

SERVED_NAME = "policy"


def server_flags(port: int, gpu_memory: float, on_gpu: bool, dtype: str) -> list[str]:
    """vLLM flags of a rollout server started by the trainer (after ``--model DIR``): a served student's
    (``student.served.serve_flags``), sampling log-probs, and on a GPU the CUDA IPC weight transfer."""
    flags = serve_flags(SERVED_NAME, port, dtype, on_gpu, gpu_memory)
    flags += ["--logprobs-mode", "processed_logprobs"]  # sampling log-probs after temperature (TRL's advice)
    if on_gpu:  # weights can come through CUDA IPC (training.weight_sync)
        flags += list(IPC_SERVER_FLAGS)
    return flags


def start_rollout_server(model_path: str | Path, stage_dir: Path, secret: str, gpu_memory: float = 0.3,
                         timeout_s: float = 600.0, dtype: str = "float32", vllm_python: str | None = None):
    """Start a dev-mode vLLM server from ``.venv-vllm`` on an export of ``model_path`` (a thinker
    checkpoint), on a free loopback port, behind the guard with ``secret``, serving in ``dtype`` (the
    policy's), logging to ``stage_dir/rollout/server.log``; returns the ready
    ``serving.vllm_server.VllmServer`` (call its ``stop()``)."""
    from serving.vllm_server import VllmServer, find_launcher, free_port, server_env
    from student.export import export_student

    launcher = find_launcher(vllm_python)
    folder = stage_dir / "rollout"
    export = folder / "model"
    if export.exists():
        shutil.rmtree(export)
    export_student(model_path, export)
    port = free_port()
    on_gpu = torch.cuda.is_available()
    # on a GPU the server inherits the trainer's CUDA_VISIBLE_DEVICES: it shares the trainer's GPU; on
    # CPU (tiny models) the model runs in the engine's process, which starts about 18 s sooner
    cpu_env = {**server_env(None), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env = {"VLLM_SERVER_DEV_MODE": "1", **(IPC_SERVER_ENV if on_gpu else cpu_env)}
    server = VllmServer(name="rollout", argv=launcher.serve(str(export)) + server_flags(port, gpu_memory, on_gpu, dtype),
                        port=port, model=SERVED_NAME, log_path=folder / "server.log", env=env,
                        ready_timeout_s=timeout_s, secret=secret)
    return server.__enter__()
