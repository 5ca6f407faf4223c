"""``--backend vllm``: the evaluator starts its own vLLM servers from ``--model`` and asks them.

* **The model**: an export (a full Qwen2.5-Omni / Qwen3-Omni checkpoint) is served as it is; a
  trainer checkpoint (a thinker) is exported first (``student.export``) into
  ``EXPORT_CACHE/<name>-<key>``, where the key is the sha256 of the files the export reads, so a
  second run of the same checkpoint serves the same export without exporting again.
* **The servers**: one per GPU of ``--gpus`` (each sees only its own), else one (on the GPU this
  process sees, or on CPU), from ``.venv-vllm`` (or ``--vllm-python``), with the flags of the
  trainer's rollout server (``student.served.serve_flags``) and ``--max-num-seqs``; their logs go to
  ``OUT/servers/``. They are stopped when the run ends, on Ctrl-C and on SIGTERM
  (``serving.vllm_server.sigterm_as_exit``).
* **Requests in flight**: ``--max-num-seqs`` per server (what each batches at once), spread over the
  servers by the teacher client (fewest in flight first); the evaluator's batch is that many items
  times the number of servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SERVED_NAME = "student"
MAX_NUM_SEQS = {"gpu": 256, "cpu": 8}  # per server: vLLM's GPU default; a CPU server batches a few
SERVER_DIR = "servers"  # under the run's --out: one log per server


def export_key(model_dir: Path) -> str:
    """The sha256 (16 hex digits) of what ``student.export`` reads from ``model_dir``: file names and bytes."""
    from student.export import SIDE_FILES, weight_files

    shards, index = weight_files(model_dir)
    names = {"config.json", *shards, *(["model.safetensors.index.json"] if index is not None else [])}
    names |= {p.name for pattern in SIDE_FILES for p in model_dir.glob(pattern)}
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0")
        with (model_dir / name).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def served_checkpoint(model: str | Path, cache: Path) -> tuple[Path, bool]:
    """The full checkpoint vLLM serves for ``model``, and whether it was exported just now (see the
    module docstring). Raises ``student.export.ExportError`` or ``UnknownStudentError`` for a directory
    that is neither a thinker nor a full checkpoint."""
    from student.export import export_student
    from student.family import family_of

    src = Path(model)
    family = family_of(src)
    if json.loads((src / "config.json").read_text()).get("model_type") == family.full_model_type:
        return src, False
    target = cache / f"{src.resolve().name}-{export_key(src)}"
    if (target / "config.json").exists():
        return target, False
    partial = cache / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    export_student(src, partial)
    try:
        partial.rename(target)
    except OSError:  # another run exported it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return target, True


def parse_gpus(gpus: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; none: ``[]``."""
    return [g.strip() for g in (gpus or "").split(",") if g.strip()]


@contextmanager
def vllm_servers(checkpoint: Path, gpus: Sequence[str], log_dir: Path, dtype: str, on_gpu: bool,
                 vllm_python: str | None = None, ready_timeout_s: float = 900.0) -> Iterator[list]:
    """Start the servers of ``checkpoint`` (one per GPU of ``gpus``, else one), wait until they are ready
    and yield them (``serving.vllm_server.VllmServer``); stop them on leaving, on Ctrl-C and on SIGTERM."""
    from serving.vllm_server import (
        VllmServer,
        find_launcher,
        free_port,
        server_env,
        sigterm_as_exit,
        start_all,
        stop_all,
        wait_ready,
    )
    from student.served import serve_flags

    launcher = find_launcher(vllm_python)
    seqs = MAX_NUM_SEQS["gpu" if on_gpu else "cpu"]
    servers = []
    for i, gpu in enumerate(list(gpus) or [None]):
        port = free_port()
        if not on_gpu:  # the model runs in the engine's process: one vLLM import fewer, a faster start
            env = {**server_env(None), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        else:
            env = server_env([gpu]) if gpu is not None else {}  # None: the GPUs this process sees
        argv = launcher.serve(str(checkpoint)) + serve_flags(SERVED_NAME, port, dtype, on_gpu) + [
            "--max-num-seqs", str(seqs)]
        servers.append(VllmServer(f"vllm-{i}", argv, port, model=SERVED_NAME, log_path=log_dir / f"vllm-{i}.log",
                                  env=env, ready_timeout_s=ready_timeout_s))
    with sigterm_as_exit():
        try:
            start_all(servers)
            wait_ready(servers, ready_timeout_s)
            yield servers
        finally:
            stop_all(servers)
