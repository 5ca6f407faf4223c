"""Start-up cost of a tiny model behind real vLLM on CPU (``make vllm-env``) against ``transformers serve``.

    python bench/vllm_startup.py [--out bench/vllm_startup.json]

Builds the ``vllm-tiny`` models (``training.tiny_models``; the Omni student exported by
``student.export``) in a temporary directory, then starts each server alone, one after the
other, through ``serving.vllm_server`` (vLLM) or as a plain process (``transformers serve``), and
measures the seconds until it is ready (``/health`` and ``/v1/models``) and until its first chat
answer. vLLM runs as the tiny profiles run it (``--enforce-eager``, fp32), with its engine in other
processes (vLLM's default) and with the model in the engine's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
Ratios are against ``transformers serve`` on the same text model in the same run. The load of the
machine (other work) is recorded with the figures: rerun on a quiet machine before comparing runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.vllm_server import VllmServer, find_launcher, server_env  # noqa: E402
from tests.conftest import free_port, wait_http  # noqa: E402


def first_answer(base_url: str, model: str) -> None:
    response = httpx.post(base_url + "/chat/completions", timeout=300, json={
        "model": model, "max_tokens": 4, "temperature": 0.0, "messages": [{"role": "user", "content": "hi"}]})
    response.raise_for_status()


def time_vllm(weights: Path, name: str, work: Path, single_process: bool) -> dict[str, float]:
    port = free_port()
    env = server_env(None) | ({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if single_process else {})
    argv = find_launcher().serve(str(weights)) + ["--served-model-name", name, "--port", str(port),
                                                  "--max-model-len", "4096", "--dtype", "float32", "--enforce-eager"]
    started = time.monotonic()
    with VllmServer(name, argv, port, model=name, log_path=work / f"{name}-{single_process}.log", env=env,
                    ready_timeout_s=900) as server:
        ready = time.monotonic() - started
        first_answer(server.base_url, name)
        answered = time.monotonic() - started
    return {"ready_s": round(ready, 1), "first_answer_s": round(answered, 1)}


def time_transformers_serve(weights: Path, work: Path) -> dict[str, float]:
    port, home = free_port(), work / "hf_home"
    (home / "hub").mkdir(parents=True, exist_ok=True)  # /v1/models fails without a hub cache directory
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    started = time.monotonic()
    with open(work / "transformers-serve.log", "w") as log:
        process = subprocess.Popen([cli, "serve", "--port", str(port), "--host", "127.0.0.1", "--device", "cpu"],
                                   env={**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=300, process=process)
        ready = time.monotonic() - started
        first_answer(f"http://127.0.0.1:{port}/v1", str(weights))
        answered = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"ready_s": round(ready, 1), "first_answer_s": round(answered, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "vllm_startup.json", help="figures as JSON")
    args = parser.parse_args(argv)
    from student.export import export_student
    from training.tiny_models import build_all

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_all(work / "models", seed=0, preset="vllm-tiny")
        export = export_student(models["omni"], work / "models" / "omni-export")
        load_before = os.getloadavg()[0]
        runs = {
            "transformers serve, text": time_transformers_serve(models["text"], work),
            "vLLM, text, engine in other processes": time_vllm(models["text"], "tiny-text", work, False),
            "vLLM, text, no worker process": time_vllm(models["text"], "tiny-text", work, True),
            "vLLM, Omni, no worker process": time_vllm(export, "tiny-omni", work, True),
        }
    baseline = runs["transformers serve, text"]["ready_s"]
    print(f"{'server':42} {'ready s':>8} {'answer s':>9} {'ready / transformers serve':>27}")
    for name, figures in runs.items():
        print(f"{name:42} {figures['ready_s']:8.1f} {figures['first_answer_s']:9.1f} "
              f"{figures['ready_s'] / baseline:27.1f}")
    record = {"runs": runs, "cpus": os.cpu_count(), "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
              "platform": platform.platform()}
    args.out.write_text(json.dumps(record, indent=1))
    print(f"load average (1 min) before / after: {record['load_1min']}; figures in {args.out}")


if __name__ == "__main__":
    main()
