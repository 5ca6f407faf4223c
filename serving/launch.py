"""Start the teachers and the merger as vLLM OpenAI servers and point build-avrt at them.

    make vllm-env   # once: vLLM in its own environment, .venv-vllm
    python -m serving.launch --config configs/teachers/paper.yaml --gpus 0,1,2 [--replicas vision=2] [--dry-run]

One vLLM server per model and replica, each in its own process group on its own GPU(s)
(``CUDA_VISIBLE_DEVICES``), or on CPU (``--cpu``, the default where no GPU is found: vLLM's CPU build,
``VLLM_CPU_KVCACHE_SPACE``), started from vLLM's own environment, never the project's: the repo's
``.venv-vllm`` unless ``--vllm-python``, ``--vllm-bin`` or ``$VLLM_BIN`` names another
(``serving.vllm_server`` holds how a server is started, awaited and stopped). Each role's model
comes from the build config (its registry entry and ``model``, which becomes
``--served-model-name``); how vLLM must serve it (media limits, context length, remote code, GPUs
per replica, environment) from ``configs/teachers/vllm_profiles.yaml``. The
server's default sampling is pinned to the config's (``--generation-config vllm`` plus
``--override-generation-config``), so a request that omits a parameter does not silently get the
checkpoint's ``generation_config.json``. These servers never run in dev mode nor unpickle requests: a
profile that sets ``VLLM_SERVER_DEV_MODE`` or ``VLLM_ALLOW_INSECURE_SERIALIZATION`` is refused, and
neither is inherited from the launcher's environment (``serving.vllm_server.CONTROL_ENV``).

It checks what would fail later with a less clear error: before starting anything, that local
weights folders exist (anything given with ``--weights`` is a folder); while the servers load (the
check imports vLLM, which takes as long as a server's first seconds), that vLLM's environment can
decode ``input_audio`` (vLLM needs its ``audio`` extra: ``pip install 'vllm[audio]'``) when a server
takes the audio role; if it cannot, the servers are stopped and the launcher exits with status 2.
Roles that share one server (two Omni roles) get the same default sampling only when theirs agree;
otherwise vLLM's neutral default (requests always carry their own sampling).

The launcher waits until every server answers ``/health`` and lists its model on ``/v1/models``,
prints the ``base_url`` lines for build-avrt (a list when a role has replicas), optionally writes a
complete config (``--write-config``), then stays in the foreground: Ctrl-C or SIGTERM stops every
server it started, and so does any server dying. ``--dry-run`` prints the exact commands instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from configs import is_local_path
from serving.vllm_server import (
    CONTROL_ENV,
    Launcher,
    ServerFailed,
    VllmNotFound,
    VllmServer,
    find_launcher,
    first_exited,
    opens_control,
    server_env,
    start_all,
    stop_all,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs/teachers/paper.yaml"
DEFAULT_PROFILES = REPO / "configs/teachers/vllm_profiles.yaml"
ROLES = ("vision", "audio", "merger")
SECTION = {"vision": "vision_teacher", "audio": "audio_teacher", "merger": "merger"}
DEFAULT_PORTS = {"vision": 8000, "audio": 8010, "merger": 8020}  # as in configs/*/paper.yaml
SERVER_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")  # what vLLM takes
AUDIO_ROLES = {"audio"}  # roles whose requests carry input_audio, which vLLM decodes with its audio extra
# Decodes a 0.1 s WAV with vLLM's own loader for ``input_audio`` parts (its module moved between
# releases). Exit 3: the loader needs packages that are missing; exit 4: the loader was not found.
AUDIO_CHECK = """
import io, struct, sys, wave
buffer = io.BytesIO()
with wave.open(buffer, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(struct.pack("<1600h", *[0] * 1600))
loader = None
for name in ("vllm.multimodal.media.audio", "vllm.multimodal.audio"):
    try:
        loader = __import__(name, fromlist=["AudioMediaIO"]).AudioMediaIO
        break
    except (ImportError, AttributeError):
        continue
if loader is None:
    sys.exit(4)
try:
    loader().load_bytes(buffer.getvalue())
except ImportError as error:
    print(error)
    sys.exit(3)
"""


class PlanError(ValueError):
    """The requested layout cannot be served (unknown role, too few GPUs, port clash, ...)."""


@dataclass(frozen=True)
class Group:
    """One model, served for one or more roles, in ``replicas`` copies."""

    roles: tuple[str, ...]
    use: str
    model: str
    weights: str
    profile: dict[str, Any]
    replicas: int
    tensor_parallel: int
    generation: dict[str, Any]
    api_key_env: str | None
    port: int
    gpu_memory_utilization: float | None = None  # explicit (--gpu-memory-utilization), else profile / sharing


@dataclass(frozen=True)
class Server:
    group: Group
    replica: int
    port: int
    gpus: tuple[str, ...]
    gpu_memory_utilization: float | None  # None on CPU
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{'+'.join(self.group.roles)}-{self.replica}"


def parse_role_map(text: str | None, cast=int) -> dict[str, Any]:
    """``"vision=2,audio=1"`` -> ``{"vision": 2, "audio": 1}``; a bare value applies to every role."""
    if not text:
        return {}
    result: dict[str, Any] = {}
    for item in text.split(","):
        role, sep, value = item.strip().partition("=")
        if not sep:
            return dict.fromkeys(ROLES, cast(role))
        if role not in ROLES:
            raise PlanError(f"unknown role {role!r} in {text!r}; roles: {', '.join(ROLES)}")
        result[role] = cast(value)
    return result


def load_profiles(path: Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load(Path(path).read_text()) or {}


def generation_defaults(endpoint) -> dict[str, Any]:
    """The endpoint's sampling in ``--override-generation-config`` form (HF names)."""
    params = {"temperature": endpoint.temperature, "max_new_tokens": endpoint.max_tokens}
    if endpoint.top_p is not None:
        params["top_p"] = endpoint.top_p
    params.update({k: v for k, v in endpoint.extra_body.items() if k in SERVER_SAMPLING})
    return params


def resolve_groups(config, profiles: dict[str, dict[str, Any]], roles: tuple[str, ...],
                   replicas: dict[str, int], tensor_parallel: dict[str, int],
                   weights: dict[str, str], ports: dict[str, int],
                   memory: dict[str, float] | None = None) -> list[Group]:
    """Roles that name the same model and weights share one group of servers."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for role in roles:
        endpoint = getattr(config, SECTION[role])
        if not endpoint.use or endpoint.use not in profiles:
            raise PlanError(f"{SECTION[role]} uses {endpoint.use or endpoint.model!r}, which has no vLLM "
                            f"profile; add one to {DEFAULT_PROFILES.relative_to(REPO)} or pass --profiles")
        profile = profiles[endpoint.use]
        path = weights.get(role) or profile.get("weights") or endpoint.model
        key = (endpoint.model, path)
        if key not in merged:
            merged[key] = {"roles": [], "use": endpoint.use, "profile": dict(profile), "replicas": 1,
                           "tp": profile.get("tensor_parallel_size", 1), "generation": generation_defaults(endpoint),
                           "api_key_env": endpoint.api_key_env, "port": ports.get(role, DEFAULT_PORTS[role]),
                           "memory": (memory or {}).get(role)}
        entry = merged[key]
        if entry["roles"] and entry["generation"] != generation_defaults(endpoint):
            entry["generation"] = {}  # a shared server cannot default to two roles' sampling
        entry["roles"].append(role)
        entry["replicas"] = max(entry["replicas"], replicas.get(role, 1))
        if role in tensor_parallel:  # an explicit size wins over the profile's (the largest, if shared)
            entry["tp"] = max(tensor_parallel[role], entry.get("tp_explicit", 0))
            entry["tp_explicit"] = entry["tp"]
        if len(entry["roles"]) > 1:  # one server for two roles: room for both roles' media
            limits = dict(entry["profile"].get("limit_mm_per_prompt") or {})
            for modality, count in (profile.get("limit_mm_per_prompt") or {}).items():
                limits[modality] = max(count, limits.get(modality, 0))
            entry["profile"]["limit_mm_per_prompt"] = limits
            entry["profile"]["max_model_len"] = max(entry["profile"].get("max_model_len", 0),
                                                    profile.get("max_model_len", 0)) or None
    groups = [Group(roles=tuple(e["roles"]), use=e["use"], model=model, weights=path, profile=e["profile"],
                    replicas=e["replicas"], tensor_parallel=e["tp"], generation=e["generation"],
                    api_key_env=e["api_key_env"], port=e["port"], gpu_memory_utilization=e["memory"])
              for (model, path), e in merged.items()]
    for group in groups:
        if group.replicas < 1 or group.tensor_parallel < 1:
            raise PlanError(f"{'+'.join(group.roles)}: replicas and tensor parallel size must be >= 1")
    return groups


def assign_gpus(needs: list[int], gpus: list[str], colocate: bool) -> list[tuple[str, ...]]:
    """GPU ids per server: disjoint slices in order; with ``colocate``, wrap around and share."""
    if not gpus:
        raise PlanError("no GPUs given (--gpus)")
    if sum(needs) > len(gpus) and not colocate:
        raise PlanError(f"{len(needs)} servers need {sum(needs)} GPUs but --gpus lists {len(gpus)}: add GPUs, "
                        "lower --replicas / --tensor-parallel, or pass --colocate to share GPUs")
    assigned, cursor = [], 0
    for need in needs:
        if need > len(gpus):
            raise PlanError(f"a server needs {need} GPUs (tensor parallel) but only {len(gpus)} are given")
        if cursor + need > len(gpus):
            cursor = 0
        assigned.append(tuple(gpus[cursor:cursor + need]))
        cursor = (cursor + need) % len(gpus)
    return assigned


def vllm_argv(launcher: Launcher, group: Group, host: str, port: int, gpu_memory: float | None) -> list[str]:
    """The vLLM command line for one server of ``group`` (``gpu_memory`` None: on CPU)."""
    profile = group.profile
    argv = launcher.serve(group.weights)
    argv += ["--served-model-name", group.model, "--host", host, "--port", str(port),
             "--tensor-parallel-size", str(group.tensor_parallel)]
    if gpu_memory is not None:
        argv += ["--gpu-memory-utilization", f"{gpu_memory:.2f}"]
    if profile.get("max_model_len"):
        argv += ["--max-model-len", str(profile["max_model_len"])]
    if profile.get("limit_mm_per_prompt") is not None:
        argv += ["--limit-mm-per-prompt", json.dumps(profile["limit_mm_per_prompt"], separators=(",", ":"))]
    if profile.get("trust_remote_code"):
        argv.append("--trust-remote-code")
    argv += ["--generation-config", "vllm"]  # never the checkpoint's generation_config.json
    if group.generation:  # the roles' own default sampling; {} (roles differ) keeps vLLM's neutral one
        argv += ["--override-generation-config", json.dumps(group.generation, separators=(",", ":"))]
    return argv + [str(arg) for arg in profile.get("extra_args") or []]


def plan(groups: list[Group], launcher: Launcher, gpus: list[str], host: str = "127.0.0.1",
         colocate: bool = False, cpu: bool = False) -> list[Server]:
    """Every server to start: ports (role base + replica index), GPUs (none with ``cpu``) and command lines."""
    slots = [(group, i) for group in groups for i in range(group.replicas)]
    assigned = [()] * len(slots) if cpu else assign_gpus([group.tensor_parallel for group, _ in slots], gpus, colocate)
    sharing = Counter(gpu for gpu_ids in assigned for gpu in gpu_ids)
    servers, ports = [], {}
    for (group, i), gpu_ids in zip(slots, assigned):
        port = group.port + i
        if port in ports:
            raise PlanError(f"port {port} is given to both {ports[port]} and {'+'.join(group.roles)}; "
                            "spread the roles with --ports")
        ports[port] = "+".join(group.roles)
        share = max((sharing[g] for g in gpu_ids), default=1)
        memory = None if cpu else group.gpu_memory_utilization or \
            math.floor(group.profile.get("gpu_memory_utilization", 0.9) / share * 100 + 1e-6) / 100
        env = {**server_env(gpu_ids, group.profile.get("cpu_kvcache_gib")),
               **{k: str(v) for k, v in (group.profile.get("env") or {}).items()}}
        if opens_control(env):  # nothing these servers do needs vLLM's control routes or pickles
            raise PlanError(f"{'+'.join(group.roles)}: the profile {group.use!r} sets {' or '.join(CONTROL_ENV)}; "
                            "teachers and the merger never run in dev mode or with insecure serialization")
        if group.api_key_env and os.environ.get(group.api_key_env):
            env["VLLM_API_KEY"] = os.environ[group.api_key_env]  # by env, so it never shows in `ps`
        servers.append(Server(group=group, replica=i, port=port, gpus=gpu_ids, gpu_memory_utilization=memory,
                              argv=tuple(vllm_argv(launcher, group, host, port, memory)), env=env))
    return servers


def check_weights(groups: list[Group], explicit: set[str], strict: bool) -> list[str]:
    """Missing local weights: a :class:`PlanError` (``strict``, before anything starts) or notes."""
    problems = []
    for group in groups:
        named = any(role in explicit for role in group.roles)
        if is_local_path(group.weights, named) and not Path(group.weights).expanduser().exists():
            hint = " (run python -m serving.prepare_af3_think first)" if "flamingo" in group.use else ""
            problems.append(f"{'+'.join(group.roles)}: weights folder {group.weights} does not exist here{hint}")
    if problems and strict:
        raise PlanError("; ".join(problems))
    return problems


def sampling_notes(groups: list[Group]) -> list[str]:
    """Say which shared servers got vLLM's neutral default sampling (their roles' differ)."""
    return [f"{'+'.join(g.roles)} share one server but sample differently: its default sampling is vLLM's "
            "neutral one, and each request carries its role's own parameters (build-avrt always sends them)"
            for g in groups if len(g.roles) > 1 and not g.generation]


def check_audio_support(python: str) -> str | None:
    """Why vLLM at ``python`` cannot decode ``input_audio`` parts, or None if it can (or cannot tell)."""
    try:
        result = subprocess.run([python, "-c", AUDIO_CHECK], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not run {python} to check audio support ({error})"
    if result.returncode == 3:
        detail = (result.stdout.strip().splitlines() or ["missing packages"])[-1]
        return (f"vLLM at {python} cannot decode audio ({detail}). Install its audio extra in vLLM's "
                "environment: pip install 'vllm[audio]' (see docs/serving.md), or pass --skip-audio-check")
    if result.returncode not in (0, 4):
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not import vLLM with {python} ({tail})"
    if result.returncode == 4:
        print(f"note: vLLM at {python} has no input_audio loader this check knows; audio not checked", file=sys.stderr)
    else:
        print(f"audio check: vLLM at {python} decodes input_audio", flush=True)
    return None


def base_urls(servers: list[Server], public_host: str) -> dict[str, list[str]]:
    urls: dict[str, list[str]] = {}
    for server in servers:
        for role in server.group.roles:
            urls.setdefault(role, []).append(f"http://{public_host}:{server.port}/v1")
    return urls


def _url_value(urls: list[str]) -> str:
    return urls[0] if len(urls) == 1 else "[" + ", ".join(urls) + "]"


def endpoint_yaml(config_data: dict[str, Any], urls: dict[str, list[str]]) -> str:
    """The config lines that point build-avrt at the servers (``use`` kept, ``base_url`` replaced)."""
    lines = []
    for role, role_urls in urls.items():
        entry = config_data.get(SECTION[role])
        use = entry if isinstance(entry, str) else (entry or {}).get("use")
        lines.append(f"{SECTION[role]}:")
        if use:
            lines.append(f"  use: {use}")
        lines.append(f"  base_url: {_url_value(role_urls)}")
    return "\n".join(lines) + "\n"


def set_flags(urls: dict[str, list[str]]) -> str:
    """The same as ``build-avrt --set`` flags (keep the rest of the config)."""
    return " ".join(shlex.quote(f"--set={SECTION[role]}.base_url={_url_value(u)}") for role, u in urls.items())


def full_config(config_data: dict[str, Any], urls: dict[str, list[str]]) -> dict[str, Any]:
    data = json.loads(json.dumps(config_data))
    for role, role_urls in urls.items():
        entry = data.get(SECTION[role])
        entry = {"use": entry} if isinstance(entry, str) else dict(entry or {})
        entry["base_url"] = role_urls[0] if len(role_urls) == 1 else role_urls
        data[SECTION[role]] = entry
    return data


def shell_line(server: Server) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in server.env.items() if k != "VLLM_API_KEY")
    key = " VLLM_API_KEY=<from $" + server.group.api_key_env + ">" if "VLLM_API_KEY" in server.env else ""
    return f"{env}{key} {shlex.join(server.argv)}"


def detect_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith("GPU "))]
    return []


def resolve_launcher(args: argparse.Namespace) -> Launcher:
    """The vLLM to run (``serving.vllm_server.find_launcher``); a dry run names it even if it is absent."""
    return find_launcher(args.vllm_python, args.vllm_bin, must_exist=not args.dry_run)


# ----------------------------------------------------------------------------- running servers


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):  # noqa: ARG001
    raise _Stop


def run(servers: list[Server], log_dir: Path, bind_host: str, ready_timeout_s: float, poll_s: float,
        on_ready, check=None) -> int:
    """Start the servers, run ``check`` (a problem or None) while they load, wait until all are ready,
    call ``on_ready``, then wait for a stop."""
    processes = [VllmServer(name=s.name, argv=list(s.argv), port=s.port, model=s.group.model,
                            log_path=log_dir / f"{s.name}.log", env=s.env, host=bind_host) for s in servers]
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        start_all(processes)
        for server, process in zip(servers, processes):
            where = f"GPU {','.join(server.gpus)}" if server.gpus else "CPU"
            print(f"started {server.name} on {where} port {server.port} (log {process.log_path})", flush=True)
        problem = check() if check else None
        if problem:
            print(f"error: {problem}; stopping the servers", file=sys.stderr)
            return 2
        wait_ready(processes, ready_timeout_s, poll_s,
                   on_ready=lambda p: print(f"ready   {p.name}: {p.model}", flush=True))
        on_ready()
        while (dead := first_exited(processes)) is None:
            time.sleep(poll_s)
        print(f"error: {dead.failure(f'exited with code {dead.exit_code()}; stopping all')}", file=sys.stderr)
        return 1
    except ServerFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("stopping servers", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown
        stop_all(processes)
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="build-avrt config naming the teachers and merger (default: %(default)s)")
    parser.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES,
                        help="vLLM serving profile per registry entry (default: %(default)s)")
    parser.add_argument("--roles", default=None,
                        help="roles to serve, e.g. vision,audio (default: all three; no merger with merger_kind concat)")
    launcher = parser.add_mutually_exclusive_group()
    launcher.add_argument("--vllm-python", help="python of vLLM's own venv (default: the project's .venv-vllm, "
                                                "built by `make vllm-env`)")
    launcher.add_argument("--vllm-bin", help="a `vllm` executable to run as `vllm serve` (default: $VLLM_BIN if "
                                             "set, else .venv-vllm's python, else vllm on PATH)")
    parser.add_argument("--weights", default=None, metavar="ROLE=PATH,...",
                        help="local weights folder per role, e.g. audio=models/audio-flamingo-3-think "
                             "(checked before anything starts)")
    parser.add_argument("--replicas", default=None, metavar="ROLE=N,...", help="servers per role (default 1 each)")
    parser.add_argument("--tensor-parallel", default=None, metavar="ROLE=N,...",
                        help="GPUs per replica (default: the profile's tensor_parallel_size)")
    parser.add_argument("--gpus", default=None,
                        help="GPU ids to use, e.g. 0,1,2,3 (default: $CUDA_VISIBLE_DEVICES, else all nvidia-smi lists)")
    parser.add_argument("--cpu", action="store_true",
                        help="serve on CPU (vLLM's CPU build, e.g. .venv-vllm on a machine without GPUs; the "
                             "default when no GPU is found); KV cache: $VLLM_CPU_KVCACHE_SPACE GiB, else the "
                             "profile's cpu_kvcache_gib, else 1")
    parser.add_argument("--colocate", action="store_true",
                        help="allow several servers per GPU (memory split evenly) when GPUs are fewer than servers")
    parser.add_argument("--gpu-memory-utilization", default=None, metavar="ROLE=F,...",
                        help="fraction of GPU memory per role's server (default: the profile's, split evenly "
                             "between servers sharing a GPU)")
    parser.add_argument("--ports", default=None, metavar="ROLE=PORT,...",
                        help="first port per role, replicas count up from it (default vision=8000,audio=8010,merger=8020)")
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind (default %(default)s)")
    parser.add_argument("--public-host", default=None,
                        help="host name written into base_url (default: --host, or this machine's name for 0.0.0.0)")
    parser.add_argument("--write-config", type=Path, default=None,
                        help="also write a complete build-avrt config pointing at the servers")
    parser.add_argument("--log-dir", type=Path, default=Path("outputs/serve-logs"), help="one log per server")
    parser.add_argument("--ready-timeout", type=float, default=1800.0,
                        help="seconds to wait for all servers (weights download and load; default %(default)s)")
    parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and config lines; start nothing")
    parser.add_argument("--skip-audio-check", action="store_true",
                        help="do not check that vLLM can decode audio before starting an audio server")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> tuple[list[Server], dict[str, Any], list[str]]:
    """Servers, the raw config data and notes for the user, from the CLI arguments."""
    from flows.config import load_config

    config_data = yaml.safe_load(args.config.read_text()) or {}
    config = load_config(args.config)
    if args.roles:
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise PlanError(f"unknown role(s) {unknown}; roles: {', '.join(ROLES)}")
    else:
        roles = tuple(r for r in ROLES if not (r == "merger" and config.merger_kind == "concat"))
    groups = resolve_groups(config, load_profiles(args.profiles), roles,
                            replicas=parse_role_map(args.replicas), tensor_parallel=parse_role_map(args.tensor_parallel),
                            weights=parse_role_map(args.weights, str), ports=parse_role_map(args.ports),
                            memory=parse_role_map(args.gpu_memory_utilization, float))
    notes = check_weights(groups, explicit=set(parse_role_map(args.weights, str)), strict=not args.dry_run)
    notes += sampling_notes(groups)
    gpus = [] if args.cpu else [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else detect_gpus()
    cpu = args.cpu or (not gpus and not args.dry_run)
    if cpu and not args.cpu:
        notes.append("no GPU found: serving on CPU (pass --cpu to say so, --gpus to name GPUs)")
    if not gpus and not cpu:
        gpus = [str(i) for i in range(sum(g.replicas * g.tensor_parallel for g in groups))]
        notes.append(f"no GPUs detected; the dry run assumes {len(gpus)} (pass --gpus to choose, --cpu for CPU)")
    return plan(groups, resolve_launcher(args), gpus, args.host, args.colocate, cpu), config_data, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        servers, config_data, notes = build_plan(args)
    except (PlanError, VllmNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    public_host = args.public_host or (socket.getfqdn() if args.host in ("0.0.0.0", "::") else args.host)
    urls = base_urls(servers, public_host)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    def print_endpoints() -> None:
        print("\n# build-avrt endpoints: put these lines in your config (they replace base_url)")
        print(endpoint_yaml(config_data, urls), end="")
        print(f"# or keep {args.config} and add: {set_flags(urls)}")
        if args.write_config:
            args.write_config.parent.mkdir(parents=True, exist_ok=True)
            header = f"# Written by python -m serving.launch from {args.config}; base_url points at the servers.\n"
            args.write_config.write_text(header + yaml.safe_dump(full_config(config_data, urls), sort_keys=False))
            print(f"# or run build-avrt --config {args.write_config}")
        sys.stdout.flush()

    if args.dry_run:
        for server in servers:
            group = server.group
            where = f"GPU {','.join(server.gpus)}" if server.gpus else "CPU"
            print(f"# {server.name}: {group.use} ({group.model}) replica {server.replica + 1}/{group.replicas}, "
                  f"{where}")
            print(shell_line(server).strip())
        print_endpoints()
        return 0
    python = resolve_launcher(args).python()
    serves_audio = any(AUDIO_ROLES & set(s.group.roles) for s in servers)
    audio_check = partial(check_audio_support, python) if python and serves_audio and not args.skip_audio_check \
        else None
    return run(servers, args.log_dir, args.host, args.ready_timeout, args.poll, print_endpoints, audio_check)


if __name__ == "__main__":
    sys.exit(main())
