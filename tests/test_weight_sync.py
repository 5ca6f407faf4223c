"""Weight sync through CUDA IPC and over NCCL (``training.weight_sync.IpcSync``, ``NcclSync``): the
control plane against the scripted server, the data plane through stand-ins (both need GPUs), and the
bodies parsed by vLLM's own IPC and NCCL weight-transfer engines in ``.venv-vllm``. The files path is
tested in test_rollout.py and, with real vLLM, in test_rollout_vllm.py."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from serving.vllm_server import project_python
from tests.scripted_server import Reply, ScriptedServer
from training.rollout import RolloutEngine, RolloutServerError, server_flags
from training.train_config import load_config
from training.weight_sync import IPC_SERVER_FLAGS, FileSync, IpcSync, NcclSync, changing_tensors, weight_sync

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"
ROUTES = ["/start_weight_update", "/update_weights", "/finish_weight_update",
          "/reset_encoder_cache", "/reset_prefix_cache", "/reset_mm_cache"]


class Workers:
    """One server's inference workers as NCCL sees them: who joined, and what they received."""

    def __init__(self) -> None:
        self.joined = threading.Event()
        self.unique_id: bytes | None = None
        self.world: int | None = None
        self.received: list[tuple[str, list[int], torch.Tensor]] = []


class StandInGroup:
    """The trainer's end of a group with ``Workers``; what it broadcasts, they receive."""

    def __init__(self, workers: Workers, unique_id: bytes, world: int, delay: float = 0.0):
        self.workers, self.delay = workers, delay
        workers.unique_id, workers.world = unique_id, world
        workers.joined.set()

    def broadcast(self, tensor: torch.Tensor) -> None:
        time.sleep(self.delay)
        self.workers.received.append((str(tensor.dtype).removeprefix("torch."), list(tensor.shape), tensor.clone()))

    def wait(self, failed) -> None:
        failed()


def _vllm_like(server: ScriptedServer, workers: Workers, tp: int = 2) -> None:
    """Routes that block as vLLM's do: set-up returns once the trainer joined the group, an update once
    every tensor it names has arrived (a trainer that waits for either before acting would hang)."""

    def init(body: dict) -> Reply:
        return Reply() if workers.joined.wait(10) else Reply(status=500, body="the trainer never joined")

    def update(body: dict) -> Reply:
        wanted = len(body["update_info"]["names"])
        deadline = time.monotonic() + 10
        while len(workers.received) < wanted and time.monotonic() < deadline:
            time.sleep(0.005)
        return Reply() if len(workers.received) == wanted else Reply(status=500, body="broadcasts missing")

    server.set_handler("policy", lambda request: Reply("x"))
    server.set_route("/get_world_size", lambda body: Reply(body={"world_size": tp}))
    server.set_route("/init_weight_transfer_engine", init)
    server.set_route("/update_weights", update)


@pytest.fixture(scope="module")
def model(tiny_models):
    from training.runtime import load_student

    return load_student(tiny_models["omni"], load_config(TINY, [f"model={tiny_models['omni']}"]))


def test_nccl_sync_broadcasts_what_each_update_names_while_the_workers_receive(model):
    workers = {}
    with ScriptedServer() as one, ScriptedServer() as two:
        for server in (one, two):
            workers[server.url] = Workers()
            _vllm_like(server, workers[server.url])
        engine = RolloutEngine([one.url, two.url])
        ids = iter([b"\x01" * 128, b"\x02" * 128])
        by_root = {root: workers[url] for root, url in zip(engine.roots, engine.urls)}
        sync = NcclSync(engine, open_group=lambda uid, world, device: StandInGroup(
            next(w for w in by_root.values() if not w.joined.is_set()), uid, world), unique_id=lambda: next(ids))
        engine.weight_sync = sync
        assert engine.sync(model) > 0
        for w in by_root.values():  # a second step: the groups are reused, everything is sent again
            w.received.clear()
        engine.sync(model)

    sent = changing_tensors(model)
    for server, uid in ((one, b"\x01" * 128), (two, b"\x02" * 128)):
        paths = [p for p, _ in server.other_posts]
        assert paths == ["/init_weight_transfer_engine", *ROUTES, *ROUTES], "one set-up, then one update per step"
        init = server.other_posts[0][1]["init_info"]
        assert init == {"nccl_unique_id_b64": base64.b64encode(uid).decode(), "rank_offset": 1, "world_size": 3,
                        "packed": False}, "the trainer is rank 0 of 1 + the server's 2 workers"
        w = workers[server.url]
        assert (w.unique_id, w.world) == (uid, 3)
        update = server.other_posts[2][1]["update_info"]
        assert update["names"] == list(sent), "every changing tensor, in checkpoint naming"
        assert [(d, s) for d, s, _ in w.received] == list(zip(update["dtype_names"], update["shapes"])), \
            "broadcast in the order, dtypes and shapes the update names (the workers size their buffers so)"
        assert all(torch.equal(t, sent[name]) for (_, _, t), name in zip(w.received, update["names"]))
    assert not any(".audio_tower." in n or ".visual." in n for n in sent), "frozen encoders are not sent"


def test_a_server_that_refuses_nccl_stops_the_sync_with_its_reason(model):
    with ScriptedServer() as server:
        _vllm_like(server, Workers())
        server.set_route("/init_weight_transfer_engine", lambda body: Reply(
            status=500, body="Weight transfer not configured. Please set weight_transfer_config"))
        engine = RolloutEngine([server.url], timeout_s=5)
        never = threading.Event()
        sync = NcclSync(engine, open_group=lambda uid, world, device: never.wait(), unique_id=lambda: b"\x00" * 128)
        with pytest.raises(RolloutServerError, match=r"refused the NCCL weight-transfer set-up.*not configured"):
            sync.push(model)  # does not wait for a join whose peers never come

        workers = Workers()
        _vllm_like(server, workers)
        server.set_route("/update_weights", lambda body: Reply(status=500, body="worker failed"))
        sync = NcclSync(engine, open_group=lambda uid, world, device: StandInGroup(workers, uid, world, delay=0.02),
                        unique_id=lambda: b"\x00" * 128)
        with pytest.raises(RolloutServerError, match=r"refused the weight update \(/update_weights\).*worker failed"):
            sync.push(model)
        assert len(workers.received) < len(changing_tensors(model)), "broadcasting stopped at the refusal"


def test_ipc_sync_hands_the_server_a_handle_per_tensor_in_the_updates_order(model):
    with ScriptedServer() as server:
        server.set_handler("policy", lambda request: Reply("x"))
        engine = RolloutEngine([server.url])
        shared: list[torch.Tensor] = []
        sync = IpcSync(engine, share=lambda tensor: shared.append(tensor) or {"GPU-0": (len(shared) - 1,)})
        sync.push(model)
        sync.push(model)
    routes = ["/start_weight_update", "/update_weights", "/finish_weight_update",
              "/reset_encoder_cache", "/reset_prefix_cache", "/reset_mm_cache"]
    assert [p for p, _ in server.other_posts] == ["/init_weight_transfer_engine", *routes, *routes]
    assert server.other_posts[0][1] == {"init_info": {"packed": False}}
    update = server.other_posts[2][1]["update_info"]
    sent = changing_tensors(model)
    assert update["names"] == list(sent) and update["shapes"] == [list(t.shape) for t in sent.values()]
    handles = pickle.loads(base64.b64decode(update["ipc_handles_pickled"]))
    assert handles == [{"GPU-0": (i,)} for i in range(len(sent))], "one handle per tensor, in the update's order"
    assert all(torch.equal(t, sent[name]) for t, name in zip(shared, update["names"]))


def test_auto_is_ipc_for_a_gpu_policy_with_its_own_server():
    with ScriptedServer() as server:
        server.set_handler("policy", lambda request: Reply("x"))
        engine = RolloutEngine([server.url])
        assert isinstance(weight_sync("auto", engine, on_gpu=True, own_server=True), IpcSync), \
            "the trainer's own server shares its GPU, where NCCL cannot have two ranks"
        assert isinstance(weight_sync("auto", engine, on_gpu=True, own_server=False), FileSync), \
            "servers given by URL may lack the flag or share no GPU: files unless ipc or nccl is asked for"
        assert isinstance(weight_sync("auto", engine, on_gpu=False, own_server=True), FileSync)
        assert isinstance(weight_sync("nccl", engine, on_gpu=True, own_server=False), NcclSync)
        for method in ("ipc", "nccl"):
            with pytest.raises(ValueError, match="needs the policy on a GPU"):
                weight_sync(method, engine, on_gpu=False, own_server=True)
    gpu, cpu = server_flags(8000, 0.3, True, "bfloat16"), server_flags(8000, 0.3, False, "float32")
    assert " ".join(IPC_SERVER_FLAGS) in " ".join(gpu) and IPC_SERVER_FLAGS[0] not in cpu


def test_nccl_with_the_trainers_own_server_is_refused_at_start_up(capsys):
    """That server shares the policy's GPU, where NCCL refuses two ranks: the config says so at once."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rollout_weight_sync=nccl needs rollout servers on other GPUs"):
        load_config(TINY, ["grpo.rollout=vllm", "grpo.rollout_weight_sync=nccl"])
    load_config(TINY, ["grpo.rollout=vllm", "grpo.rollout_weight_sync=nccl", "grpo.rollout_urls=[http://gpu1:8000/v1]"])
    load_config(TINY, ["grpo.rollout=vllm", "grpo.rollout_weight_sync=ipc"])
    load_config(TINY, ["grpo.rollout=hf", "grpo.rollout_weight_sync=nccl"])  # no server: nothing to sync
    from training.sft_then_grpo import main

    with pytest.raises(SystemExit) as stopped:  # before any stage starts: one line, exit status 2
        main(["--config", str(TINY), "grpo.rollout=vllm", "grpo.rollout_weight_sync=nccl"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "NCCL refuses two ranks" in error and "Traceback" not in error


def test_the_project_and_vllms_cuda_lock_pin_the_same_nccl():
    """NCCL needs one version on every rank: the trainer's torch and .venv-vllm's CUDA build must agree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("nvidia-nccl-cu13")
    except PackageNotFoundError:
        pytest.skip("this torch build carries no nvidia-nccl-cu13")
    lock = (ROOT / "serving" / "vllm-env" / "cuda.txt").read_text()
    assert f"nvidia-nccl-cu13=={ours}\n" in lock, f"the trainer has NCCL {ours}; serving/vllm-env/cuda.txt pins another"


@pytest.mark.slow
@pytest.mark.skipif(project_python() is None, reason="no .venv-vllm: run `make vllm-env`")
def test_vllms_engines_parse_the_trainers_bodies_and_the_servers_flag(model, tmp_path):
    """vLLM's NCCL and IPC engines parse what the trainer sends (the IPC handles are stand-ins: real ones
    need a GPU), and vLLM's serve parser takes the flag of the trainer's own server."""
    with ScriptedServer() as server:
        workers = Workers()
        _vllm_like(server, workers, tp=1)
        engine = RolloutEngine([server.url])
        NcclSync(engine, open_group=lambda uid, world, device: StandInGroup(workers, uid, world),
                 unique_id=lambda: os.urandom(128)).push(model)
        nccl = dict(server.other_posts)
        server.other_posts.clear()
        IpcSync(engine, share=lambda tensor: {"GPU-0": (0, 1)}).push(model)
        ipc = dict(server.other_posts)
    spec = {"weight_transfer": {
                "nccl": {"backend": "nccl", "init": nccl["/init_weight_transfer_engine"]["init_info"],
                         "update": nccl["/update_weights"]["update_info"]},
                "ipc": {"backend": "ipc", "init": ipc["/init_weight_transfer_engine"]["init_info"],
                        "update": ipc["/update_weights"]["update_info"]}},
            "serve": {"rollout": ["--model", "/weights", *server_flags(8000, 0.3, True, "bfloat16")]}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([project_python(), str(ROOT / "tests" / "vllm_checks.py"), str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=500,
                          env={**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    names = list(changing_tensors(model))
    parsed = result["weight_transfer"]["nccl"]
    assert parsed["ok"], parsed
    assert (parsed["world_size"], parsed["rank_offset"], parsed["packed"], parsed["unique_id_bytes"]) == (2, 1, False, 128)
    assert parsed["names"] == names
    parsed = result["weight_transfer"]["ipc"]
    assert parsed["ok"], parsed
    assert parsed["packed"] is False and parsed["names"] == names and parsed["handles"] == len(names)
    assert result["serve"]["rollout"]["ok"] and result["serve"]["rollout"]["weight_transfer_backend"] == "ipc"
