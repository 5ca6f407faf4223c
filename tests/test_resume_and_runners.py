"""A killed run resumes without repeating finished calls or duplicating rows; Dask task runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline_helpers import merger_handler, teacher_handler, write_config
from tests.scripted_server import ScriptedServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _manifest(synthetic_data: Path, out: Path, n: int) -> tuple[Path, list[dict]]:
    base = [json.loads(l) for l in (synthetic_data / "manifest.jsonl").read_text().splitlines()]
    rows = []
    for i in range(n):
        row = dict(base[i % len(base)])
        rows.append({**row, "id": f"s{i}", "question": f"Q{i}: {row['question']}", "video": str(synthetic_data / row["video"])})
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _request_key(request: dict) -> str:
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return request["model"] + "|" + text


def _run(manifest: Path, out: Path, config: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.build_avrt", "--manifest", str(manifest), "--out", str(out),
                             "--config", str(config)], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_minus_nine_and_resume(synthetic_data, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 12)
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    with ScriptedServer(latency=0.25) as server:
        server.set_handler("vision", teacher_handler(gold))
        server.set_handler("audio", teacher_handler(gold))
        server.set_handler("merger", merger_handler())
        config = write_config(tmp_path / "config.yaml", server.url, shard_size=3)
        config.write_text(config.read_text().replace("max_in_flight: 8", "max_in_flight: 2"))
        out = tmp_path / "out"

        process = _run(manifest, out, config, env)
        deadline = time.monotonic() + 180
        while len(server.completed) < 20 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the first run finished before it could be killed: " + process.stdout.read()[-2000:]
        os.killpg(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        process.wait()
        finished_before = {_request_key(r) for t, r in server.completed if t < killed_at - 0.3}
        first_run_calls = len(server.requests)
        assert 0 < len(finished_before) < 12 * 3

        time.sleep(0.5)
        server.reset_counts()
        resumed = _run(manifest, out, config, env)
        output, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, output[-3000:]

    repeated = [_request_key(r) for r in server.requests if _request_key(r) in finished_before]
    assert repeated == [], f"finished calls were repeated after resume: {repeated[:3]}"
    corpus = pd.read_parquet(out / "corpus" / "train.parquet")
    assert sorted(corpus["id"]) == sorted(r["id"] for r in rows)  # nothing lost, no duplicates
    assert corpus["id"].is_unique
    total_calls = first_run_calls + len(server.requests)
    assert total_calls <= 12 * 3 + 2 * 3  # at most the calls in flight at the kill are sent twice
    assert "calls sent" in output


def test_dask_task_runner_spreads_shards(synthetic_data, scripted_server, prefect_api, tmp_path):
    from flows.build_avrt import build_avrt

    manifest, rows = _manifest(synthetic_data, tmp_path, 6)
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    scripted_server.set_handler("vision", teacher_handler(gold))
    scripted_server.set_handler("audio", teacher_handler(gold))
    scripted_server.set_handler("merger", merger_handler())
    config = write_config(tmp_path / "config.yaml", scripted_server.url, shard_size=2, task_runner="dask", dask_workers=2)
    config.write_text(config.read_text().replace("max_in_flight: 8", "max_in_flight: 2"))
    scripted_server.latency = 0.2
    stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"), config=str(config))
    assert stats["samples_kept"] == 6 and stats["shards"]["total"] == 3
    assert scripted_server.counts == {"vision": 6, "audio": 6, "merger": 6}
    # Two worker processes, each with max_in_flight // 2 = 1 per replica: the cluster stays within 2.
    assert max(scripted_server.peak.values()) <= 2
