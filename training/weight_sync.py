"""How the policy's weights reach the vLLM rollout servers after every optimizer step (``grpo.rollout_weight_sync``).

Every way sends the same tensors: the thinker's that training can change (``changing_tensors``: those
that require grad; the frozen encoders never change), under their checkpoint names in the full
Qwen2.5-Omni naming that vLLM loads (``thinker.<name>``, ``student.served.renamed``).
Each server loads them in place with its model's own ``load_weights`` (vLLM's layer-wise reload),
then its encoder, prefix and multimodal caches are reset (``RolloutEngine.reset_caches``). A sync
reaches the servers through what ``Servers`` names (``training.rollout.RolloutEngine`` has it), so
this module does not import the rollout module, which imports it.

* ``files`` (``FileSync``, portable): the tensors go to one safetensors file in a fresh folder on tmpfs
  (``/dev/shm``; ``grpo.rollout_sync_dir`` for another place), and every server is asked
  ``POST /collective_rpc {"method": "reload_weights", ...}``. The folder must be readable by the
  servers: the same host, or a shared filesystem.
* ``ipc`` (``IpcSync``, a server on the policy's own GPU): the server's workers map the policy's GPU
  memory through CUDA IPC handles (``torch.multiprocessing.reductions.reduce_tensor``, one per
  tensor, pickled) and copy from it, through vLLM's weight-transfer routes
  (``/init_weight_transfer_engine`` once per server, then ``/start_weight_update``,
  ``/update_weights``, ``/finish_weight_update`` per sync). The server needs
  ``--weight-transfer-config '{"backend": "ipc"}'`` and ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` to
  read pickled handles; the server the trainer starts on a GPU has both (it listens on loopback only,
  behind the guard that refuses any request without the run's secret: ``training.rollout``).
* ``nccl`` (``NcclSync``, servers on other GPUs): the trainer broadcasts the tensors straight from
  GPU memory to the server's workers through the same routes. The trainer joins one NCCL group per
  server as rank 0 with an NCCL unique id it mints itself (``torch.cuda.nccl``; vLLM's unique-id
  rendezvous, meant for trainers that do not import vLLM), answers the workers' one-element warm-up
  all-reduce, and then broadcasts tensor by tensor in the order the update names them (vLLM's
  unpacked mode). NCCL refuses two ranks on one GPU, so the servers must sit on other GPUs that this
  process's NCCL can reach, started in dev mode with ``--weight-transfer-config '{"backend":
  "nccl"}'``; the project's environment and ``.venv-vllm``'s CUDA lock pin the same NCCL
  (``nvidia-nccl-cu13``), which NCCL requires.
* ``auto`` (the default): ``ipc`` when the policy is on a GPU and the trainer started the server
  itself (on the policy's GPU), else ``files``.
"""

from __future__ import annotations

import base64
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch

from configs import UserError
from student.served import renamed
from training.encoders import thinker

T = TypeVar("T")
WEIGHTS_FILE = "model.safetensors"
SyncMethod = Literal["auto", "ipc", "nccl", "files"]
# what lets a vLLM server on the policy's GPU take weights through CUDA IPC (the trainer's own server has it)
IPC_SERVER_FLAGS = ("--weight-transfer-config", '{"backend": "ipc"}')
IPC_SERVER_ENV = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}  # the handles travel pickled


def changing_tensors(model, everything: bool = False) -> dict[str, torch.Tensor]:
    """The thinker's tensors that training can change (parameters that require grad), or all of its
    state with ``everything``, under their checkpoint names in the full Qwen2.5-Omni naming.

    transformers names modules in memory differently from its checkpoints
    (``model.language_model.layers.0`` is ``model.layers.0`` on disk): the model's own
    ``revert_weight_conversion`` gives the names ``save_pretrained`` writes, which vLLM loads.
    """
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    model = thinker(model)
    if everything:
        named = dict(model.state_dict())
    else:
        named = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    named = revert_weight_conversion(model, remove_tied_weights_from_state_dict(named, model))
    names = renamed(list(named))
    return {names[name]: tensor.detach().contiguous() for name, tensor in named.items()}


def export_weights(model, folder: str | Path, everything: bool = False) -> Path:
    """Write ``model``'s changing thinker tensors (``changing_tensors``) to ``folder/model.safetensors``
    (replacing the folder's content); returns the folder. Callable alone (a bench can time it)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tensors = {k: v.cpu() for k, v in changing_tensors(model, everything).items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


def default_sync_dir() -> Path:
    """A private folder on tmpfs (``/dev/shm``) when there is one, else in the temp directory."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="avrt-rollout-weights-", dir=base))


def update_info(tensors: dict[str, torch.Tensor]) -> dict[str, list]:
    """The names, dtypes and shapes vLLM's ``/update_weights`` expects, in the order the tensors are sent."""
    return {"names": list(tensors), "dtype_names": [str(t.dtype).removeprefix("torch.") for t in tensors.values()],
            "shapes": [list(t.shape) for t in tensors.values()]}


class Servers(Protocol):
    """What a weight sync needs of the rollout servers (``training.rollout.RolloutEngine``)."""

    timeout_s: float

    @property
    def roots(self) -> list[str]: ...

    def call(self, root: str, route: str, body: dict[str, Any] | None = None, method: str = "POST",
             what: str = "the weight update") -> Any: ...

    def reset_caches(self, root: str) -> None: ...

    def load_weights(self, folder: str | Path) -> None: ...


class WeightSync(Protocol):
    name: str  # the grpo.rollout_weight_sync value it implements

    def push(self, model) -> None: ...

    def close(self) -> None: ...


class FileSync:
    """``files``: write the tensors to a folder the servers can read, and have each reload from it."""

    name = "files"

    def __init__(self, engine: Servers, sync_dir: str | Path | None = None):
        self.engine = engine
        self.sync_dir = Path(sync_dir) if sync_dir else None

    def push(self, model) -> None:
        if self.sync_dir is None:
            self.sync_dir = default_sync_dir()
        self.engine.load_weights(export_weights(model, self.sync_dir / "current"))

    def close(self) -> None:
        if self.sync_dir is not None:
            shutil.rmtree(self.sync_dir, ignore_errors=True)


def cuda_ipc_handle(tensor: torch.Tensor) -> dict[str, tuple]:
    """What a process on the same GPU needs to map ``tensor``: its GPU's UUID -> ``reduce_tensor``'s
    arguments for ``rebuild_cuda_tensor`` (the form vLLM's IPC engine reads)."""
    from torch.multiprocessing.reductions import reduce_tensor

    _, args = reduce_tensor(tensor)
    return {str(torch.cuda.get_device_properties(tensor.device).uuid): args}


class IpcSync:
    """``ipc``: the server's workers copy the tensors out of the policy's own GPU memory (see the module's
    docstring)."""

    name = "ipc"

    def __init__(self, engine: Servers, share: Callable[[torch.Tensor], dict] = cuda_ipc_handle):
        self.engine, self.share = engine, share
        self.ready: set[str] = set()  # servers whose weight-transfer engine is set up

    def push(self, model) -> None:
        tensors = changing_tensors(model)  # kept alive until every server has copied them
        handles = base64.b64encode(pickle.dumps([self.share(t) for t in tensors.values()])).decode()
        update = {**update_info(tensors), "ipc_handles_pickled": handles}
        for root in self.engine.roots:
            if root not in self.ready:
                self.engine.call(root, "/init_weight_transfer_engine", {"init_info": {"packed": False}},
                                 what="the CUDA IPC weight-transfer set-up")
                self.ready.add(root)
            for route, body in (("/start_weight_update", None), ("/update_weights", {"update_info": update}),
                                ("/finish_weight_update", None)):
                self.engine.call(root, route, body)
            self.engine.reset_caches(root)

    def close(self) -> None:
        self.ready.clear()


class Group(Protocol):
    """This process's end (rank 0) of an NCCL group with one server's workers."""

    def broadcast(self, tensor: torch.Tensor) -> None: ...

    def wait(self, failed: Callable[[], None]) -> None:
        """Block until every broadcast queued so far has completed, calling ``failed`` (which raises
        if the server's side has given up) while waiting."""


class TorchNcclGroup:
    """An NCCL communicator of ``torch.cuda.nccl`` on ``device``, joined as rank 0 of ``world``."""

    def __init__(self, unique_id: bytes, world: int, device: torch.device):
        import torch.cuda.nccl as nccl

        self.nccl, self.device = nccl, device
        with torch.cuda.device(device):  # joined on a side thread, whose current device is not the trainer's
            self.comm = nccl.init_rank(world, unique_id, 0)
            # vLLM's workers all-reduce one float32 zero right after joining; every rank must take part
            nccl.all_reduce([torch.zeros(1, device=device)], comms=[self.comm])

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.nccl.broadcast([tensor], root=0, comms=[self.comm])

    def wait(self, failed: Callable[[], None]) -> None:
        stream = torch.cuda.current_stream(self.device)
        while not stream.query():  # a broadcast to a worker that died would never finish
            failed()
            time.sleep(0.005)


def in_background(function: Callable[..., T], *args, **kwargs) -> Future[T]:
    """Run ``function`` on a daemon thread (an NCCL call or a request blocked on a peer that never comes
    must not keep the process alive); its result or error arrives in the returned future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(err)

    threading.Thread(target=run, daemon=True).start()
    return future


def mint_unique_id() -> bytes:
    import torch.cuda.nccl as nccl

    return nccl.unique_id()


class NcclSync:
    """``nccl``: broadcast the tensors to each server's workers over NCCL (see the module's docstring)."""

    name = "nccl"

    def __init__(self, engine: Servers, open_group: Callable[[bytes, int, torch.device], Group] = TorchNcclGroup,
                 unique_id: Callable[[], bytes] = mint_unique_id):
        self.engine, self.open_group, self.unique_id = engine, open_group, unique_id
        self.groups: dict[str, Group] = {}

    def _join(self, root: str, device: torch.device) -> Group:
        """Form the group with ``root``'s workers: they join (ranks 1..) inside the HTTP call while this
        process joins as rank 0 on a side thread (a daemon: an NCCL join whose peers never come
        cannot be interrupted)."""
        world = 1 + int(self.engine.call(root, "/get_world_size", method="GET")["world_size"])
        unique_id = self.unique_id()
        joined = in_background(self.open_group, unique_id, world, device)
        self.engine.call(root, "/init_weight_transfer_engine", {"init_info": {
            "nccl_unique_id_b64": base64.b64encode(unique_id).decode(), "rank_offset": 1, "world_size": world,
            "packed": False}}, what="the NCCL weight-transfer set-up")
        return joined.result(timeout=self.engine.timeout_s)

    def push(self, model) -> None:
        tensors = changing_tensors(model)
        device = next(iter(tensors.values())).device
        update = update_info(tensors)
        for root in self.engine.roots:
            if root not in self.groups:
                self.groups[root] = self._join(root, device)
            group = self.groups[root]
            self.engine.call(root, "/start_weight_update")
            # the workers receive inside the /update_weights call, while this thread broadcasts
            receiving = in_background(self.engine.call, root, "/update_weights", {"update_info": update})

            def failed() -> None:
                if receiving.done():
                    receiving.result()  # raises the server's refusal

            for tensor in tensors.values():
                failed()
                group.broadcast(tensor)
            group.wait(failed)
            receiving.result()
            self.engine.call(root, "/finish_weight_update")
            self.engine.reset_caches(root)

    def close(self) -> None:
        self.groups.clear()  # the servers drop their end when they stop; nothing here outlives the process


def sync_method(method: SyncMethod, *, on_gpu: bool, own_server: bool) -> SyncMethod:
    """The way ``method`` resolves to: ``auto`` is ``ipc`` for a policy on a GPU with a server the trainer
    started itself (on the policy's GPU, with the flag), else ``files``; ``ipc`` and ``nccl`` without a
    GPU are a ``UserError``."""
    if method == "auto":
        method = "ipc" if on_gpu and own_server else "files"
    if method in ("ipc", "nccl") and not on_gpu:
        raise UserError(f"grpo.rollout_weight_sync={method} needs the policy on a GPU (none here); "
                        "use grpo.rollout_weight_sync=files (or auto)")
    return method


def weight_sync(method: SyncMethod, engine: Servers, *, on_gpu: bool, own_server: bool,
                sync_dir: str | Path | None = None) -> FileSync | IpcSync | NcclSync:
    """The ``WeightSync`` that ``method`` names (``sync_method``)."""
    method = sync_method(method, on_gpu=on_gpu, own_server=own_server)
    if method == "ipc":
        return IpcSync(engine)
    if method == "nccl":
        return NcclSync(engine)
    return FileSync(engine, sync_dir)
