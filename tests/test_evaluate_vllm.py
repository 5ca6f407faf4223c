"""``--backend vllm`` (``evaluation.vllm_backend``): the export cache, the servers' command line and
logs, the spread of requests, and that no server outlives the run (a normal end, SIGTERM, Ctrl-C).

The servers here are a stand-in ``vllm`` package (an OpenAI chat server that records its command line
and process id): the real path through vLLM is the openai backend's parity test in
tests/test_real_vllm.py (the same requests), and starting real servers costs a minute each."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from evaluation.evaluate import PREDICTIONS, read_predictions, run
from tests.conftest import process_alive

REPO = Path(__file__).resolve().parents[1]

FAKE_SERVER = textwrap.dedent('''\
    """A stand-in for vLLM's OpenAI server: records its command line and process id, answers chats."""
    import argparse, json, os, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--model"); parser.add_argument("--served-model-name"); parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    args, _ = parser.parse_known_args()
    records = os.environ["FAKE_VLLM_DIR"]
    with open(os.path.join(records, f"server-{os.getpid()}.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200 if self.path in ("/health", "/v1/models") else 404,
                       {"data": [{"id": args.served_model_name}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            Handler.seen = getattr(Handler, "seen", 0) + 1
            token = os.environ.get("FAKE_VLLM_DIE")  # "PATH:N": the first server to take PATH dies at its Nth request
            if token and Handler.seen >= int(token.rsplit(":", 1)[1]):
                try:
                    os.rename(token.rsplit(":", 1)[0], token.rsplit(":", 1)[0] + ".taken")
                    os._exit(1)
                except FileNotFoundError:
                    pass
            with open(os.path.join(records, f"request-{os.getpid()}-{time.monotonic_ns()}.json"), "w") as f:
                json.dump({"mm_processor_kwargs": request.get("mm_processor_kwargs"),
                           "parts": [p["type"] for p in request["messages"][-1]["content"]]}, f)
            time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
            self._send(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "<answer>A</answer>"}}],
                             "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})

        def log_message(self, *a):
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
    ''')


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    """A ``vllm`` package whose ``entrypoints.openai.api_server`` is the stand-in, on ``PYTHONPATH``;
    returns the folder where its servers record themselves and their requests."""
    package = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_SERVER)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "fake"), str(REPO)]))
    monkeypatch.setenv("FAKE_VLLM_DIR", str(records))
    return records



def _servers(records: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("server-*.json"))]


def _argv(tiny_models, synthetic_data, tmp_path, *extra) -> list[str]:
    return ["--backend", "vllm", "--model", str(tiny_models["omni"]), "--vllm-python", sys.executable,
            "--export-cache", str(tmp_path / "exports"), "--benchmark", "manifest",
            "--data", str(synthetic_data / "manifest.jsonl"), "--max-new-tokens", "5", "--quiet", *extra]


def test_vllm_backend_exports_once_serves_and_stops_its_server(fake_vllm, tiny_models, synthetic_data, tmp_path):
    out = tmp_path / "eval"
    report = run(_argv(tiny_models, synthetic_data, tmp_path, "--limit", "3", "--modalities", "av,a",
                       "--out", str(out)))
    (server,) = _servers(fake_vllm)
    assert not process_alive(server["pid"]), "the server stops with the run"
    argv = " ".join(server["argv"])
    for flag in ("--trust-request-mm-kwargs", "--mm-processor-cache-gb 0", "--generation-config vllm",
                 "--dtype float32", "--enforce-eager", "--max-num-seqs 8", "--host 127.0.0.1"):
        assert flag in argv, flag  # the trainer's rollout server's flags (on CPU), sized batches
    (export,) = (tmp_path / "exports").iterdir()
    assert server["argv"][server["argv"].index("--model") + 1] == str(export), "the trainer checkpoint, exported"
    assert (out / "servers" / "vllm-0.log").exists()
    rows = read_predictions(out / PREDICTIONS)
    assert len(rows) == 6 and all(r["error"] is None and r["letter"] == "A" for r in rows)
    requests = [json.loads(p.read_text()) for p in fake_vllm.glob("request-*.json")]
    aligned = [r for r in requests if r["parts"] == ["video_url", "text"]]
    assert len(aligned) == 3 and all(r["mm_processor_kwargs"]["use_audio_in_video"] for r in aligned)
    pace = report["throughput"]
    assert (pace["items"], pace["predictions"], pace["new_tokens"]) == (3, 6, 30)
    assert pace["items_per_s"] > 0 and pace["new_tokens_per_s"] > 0
    assert report["backend"]["kind"] == "vllm" and "2 fps" in report["backend"]["differs_from_hf"]

    stamp = (export / "config.json").stat().st_mtime_ns
    run(_argv(tiny_models, synthetic_data, tmp_path, "--limit", "4", "--modalities", "av,a", "--out", str(out)))
    assert [p.name for p in (tmp_path / "exports").iterdir()] == [export.name]
    assert (export / "config.json").stat().st_mtime_ns == stamp, "a second run does not export again"
    assert len(read_predictions(out / PREDICTIONS)) == 8, "the re-run adds only the new item"
    assert not any(process_alive(s["pid"]) for s in _servers(fake_vllm))


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_no_server_outlives_an_evaluation_stopped_by_a_signal(fake_vllm, tiny_models, synthetic_data, tmp_path,
                                                              monkeypatch, sig, raised):
    """SIGTERM, and Ctrl-C (SIGINT), to this process while a request is in flight."""
    monkeypatch.setenv("FAKE_VLLM_DELAY", "60")  # requests hang until the signal comes

    def signal_when_asked() -> None:
        deadline = time.monotonic() + 120
        while not list(fake_vllm.glob("request-*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), sig)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a shell, whatever the runner set
    threading.Thread(target=signal_when_asked, daemon=True).start()
    try:
        with pytest.raises(raised):
            run(_argv(tiny_models, synthetic_data, tmp_path, "--limit", "1", "--modalities", "a", "--out",
                      str(tmp_path / "o")))
    finally:
        signal.signal(signal.SIGINT, previous)
    (server,) = _servers(fake_vllm)
    assert not process_alive(server["pid"]), f"{sig.name}: the server was left running"
    assert read_predictions(tmp_path / "o" / PREDICTIONS) == [], "nothing is scored from an unanswered request"


def _requests(records: Path) -> int:
    return len(list(records.glob("request-*.json")))


def test_a_dead_server_keeps_what_was_written_and_a_rerun_finishes_the_rest(fake_vllm, tiny_models, synthetic_data,
                                                                             tmp_path, monkeypatch, capsys):
    token = tmp_path / "die"
    token.write_text("")
    monkeypatch.setenv("FAKE_VLLM_DIE", f"{token}:3")  # the server dies at its third request
    out = tmp_path / "o"
    argv = _argv(tiny_models, synthetic_data, tmp_path, "--limit", "6", "--modalities", "a", "--batch-size", "2",
                 "--retries", "0", "--out", str(out))
    with pytest.raises(SystemExit) as stopped:
        run(argv)
    assert stopped.value.code == 3
    assert "4 of 6 predictions got no answer" in capsys.readouterr().err
    written = read_predictions(out / PREDICTIONS)
    assert len(written) == 2 and all(r["error"] is None for r in written), "what was answered stays, none scored wrong"
    first = _requests(fake_vllm)
    report = run(argv)  # the same command: a fresh server (the token is spent) finishes the rest
    assert _requests(fake_vllm) - first == 4, "only what was left is asked again"
    rows = read_predictions(out / PREDICTIONS)
    assert len(rows) == 6 and all(r["error"] is None for r in rows) and report["status"] == "ok"
    assert not any(process_alive(s["pid"]) for s in _servers(fake_vllm))


def test_items_of_a_dead_server_are_retried_on_the_others(fake_vllm, tiny_models, synthetic_data, tmp_path,
                                                          monkeypatch):
    token = tmp_path / "die"
    token.write_text("")
    monkeypatch.setenv("FAKE_VLLM_DIE", f"{token}:2")
    out = tmp_path / "o"
    report = run(_argv(tiny_models, synthetic_data, tmp_path, "--gpus", "0,1", "--limit", "6", "--modalities", "a",
                       "--batch-size", "3", "--out", str(out)))
    servers = _servers(fake_vllm)
    assert sorted(s["cuda"] for s in servers) == ["0", "1"], "one server per GPU, each sees its own"
    assert not token.exists(), "one server died"
    rows = read_predictions(out / PREDICTIONS)
    assert len(rows) == 6 and all(r["error"] is None for r in rows) and report["status"] == "ok"
    assert not any(process_alive(s["pid"]) for s in servers)

