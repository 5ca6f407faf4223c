"""Shared fixtures: tiny offline models, synthetic clips, and the two kinds of test servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving.vllm_server import free_port  # noqa: F401  (tests import it from here)
from tests.scripted_server import ScriptedServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from offline test servers

# The longest modules (minutes each on 2 cores), longest first. `make test` runs two pytest-xdist
# workers, one module at a time each (--dist loadscope --no-loadscope-reorder): these start first
# and overlap, and the short modules fill in behind them. Only the order depends on this list.
LONGEST_FIRST = ("test_demo_miniature", "test_real_vllm", "test_rollout_vllm", "test_build_safety",
                 "test_student_families", "test_resume_and_runners", "test_pipeline", "test_distributed")


if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one torch thread each, no oversubscription
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))  # stable


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server per test process (Prefect's own ``prefect_test_harness``); yields
    its API URL. Flows run in this process report to it; CLI subprocesses get it as ``PREFECT_API_URL``."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny Omni thinker (``omni``) and Qwen2 text model (``text``), built once per session."""
    from training.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_omni(tmp_path_factory) -> Path:
    """The tiny Qwen3-Omni (MoE) thinker, built once per session."""
    from training.tiny_models import build_qwen3_omni

    return build_qwen3_omni(tmp_path_factory.mktemp("tiny-qwen3-omni"), seed=0)


STUDENT_FAMILIES = ("qwen2.5-omni", "qwen3-omni")


@pytest.fixture(params=STUDENT_FAMILIES)
def student_dir(request, tiny_models) -> Path:
    """A tiny student checkpoint of each family in turn (Qwen2.5-Omni, Qwen3-Omni)."""
    if request.param == "qwen3-omni":
        return request.getfixturevalue("tiny_qwen3_omni")
    return tiny_models["omni"]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Six synthetic clips with manifest.jsonl/avqa.json, plus the odd and broken clips."""
    from media.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, n=6, seed=0, odd=True)
    return out


@pytest.fixture(scope="session")
def corpus(synthetic_data, tmp_path_factory) -> Path:
    """A five-row corpus in build-avrt's format (4 train rows, 1 val) made from the synthetic clips."""
    from tests.corpus_fixture import write_corpus

    return write_corpus(synthetic_data, tmp_path_factory.mktemp("corpus"), n=5)


@pytest.fixture
def scripted_server():
    with ScriptedServer() as server:
        yield server


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_http(url: str, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")


@pytest.fixture(scope="session")
def transformers_server(tiny_models, tmp_path_factory):
    """A real ``transformers serve`` on a free loopback port; yields its ``/v1`` base URL.

    It serves any local model directory named in a request's ``model`` field (the tiny Omni thinker
    and the tiny text model alike).
    """
    port = free_port()
    home = tmp_path_factory.mktemp("hf_home")
    (home / "hub").mkdir()  # /v1/models fails without a hub cache directory
    # one torch thread per request: the server runs each model on its own thread, and more threads
    # than cores stall each other (the tests' own process shares the cores)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    log = open(home / "serve.log", "w")
    process = subprocess.Popen([cli, "serve", "--port", str(port), "--host", "127.0.0.1", "--device", "cpu"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=180, process=process)
        yield f"http://127.0.0.1:{port}/v1"
    except Exception:
        log.flush()
        print((home / "serve.log").read_text()[-4000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def prompt_lengths(batch) -> list[int]:
    """Number of prompt tokens per row of a training batch (labels masked from the left)."""
    from student.inputs import IGNORE_INDEX

    lengths = []
    for labels, mask in zip(batch["labels"], batch["attention_mask"]):
        target = (labels != IGNORE_INDEX).nonzero()
        lengths.append(int(target[0]) if len(target) else int(mask.sum()))
    return lengths


def assert_positions_are_the_models(model, processor, samples, aligned, completions=None) -> dict:
    """Each row of ``build_inputs(samples)`` carries the model's own rope index for that row alone with its
    layout (``aligned[row]``); returns the batch."""
    import torch

    from student.inputs import build_inputs

    batch = build_inputs(processor, samples, completions)
    for row, (sample, flag) in enumerate(zip(samples, aligned)):
        alone = build_inputs(processor, [sample], None if completions is None else completions[:1])
        mask = alone["attention_mask"]
        expected, _ = model.model.get_rope_index(
            alone["input_ids"], alone.get("image_grid_thw"), alone.get("video_grid_thw"), mask, flag,
            alone["feature_attention_mask"].sum(-1) if "feature_attention_mask" in alone else None,
            alone.get("video_second_per_grid"))
        assert torch.equal(batch["position_ids"][:, row][:, batch["attention_mask"][row].bool()],
                           expected[:, 0][:, mask[0].bool()].long()), f"row {row}"
    return batch
