"""build-avrt's command line and process setup, importable without Prefect (so ``--help`` is instant)."""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DESCRIPTION = """build-avrt: the AVRT data pipeline as a Prefect flow.

For each audio-visual multiple-choice sample: extract 8 frames and 10 s of 16 kHz audio, ask a
vision teacher about the frames and an audio teacher about the audio (each with its paper prompt),
parse each teacher's chosen option, keep the samples the filter policy accepts (default: both
teachers right), merge the two traces into ``<think>…</think><answer>X</answer>`` with a text LLM,
and write the corpus with statistics.

    python -m flows.build_avrt --config configs/build/demo.yaml --manifest clips/manifest.jsonl --out outputs/corpus

Outputs under ``--out``: ``corpus/{split}.parquet`` (kept), ``rejected/{split}.parquet`` (with
``stage`` and ``reason``), ``stats.json``, ``stats.png``, ``README.md`` (dataset card), ``media/``
or ``cache/`` (frames and audio the corpus points to), ``work/shards/`` (per-sample checkpoints).
Every model call and every extraction is cached by content, so re-runs repeat no finished work.

Samples whose calls failed for transport reasons (timeouts, connection errors, 429, 5xx) are left
*pending*, never rejected; a run that stops on an endpoint that cannot serve (bad key, unknown
model, not an OpenAI server, down) leaves the rest pending too, and so does one in which not a single
sample's media file exists (the folder is wrong: give --video-dir). Either way it exits with status 3;
run the same command again to finish. One run per --out at a time; a manifest that would drop
kept rows of --out's corpus needs --replace.

Exit status: 0 done; 2 refused (bad config or manifest, --out busy, rows would be dropped);
3 finished with pending samples (re-run to resume).
"""

EXIT_OK, EXIT_REFUSED, EXIT_PENDING = 0, 2, 3

# Settings of the temporary Prefect server a run starts when PREFECT_API_URL is unset: no telemetry
# (DNS errors offline), no event persistence or automations (SQLite "database is locked" under
# load); flow and task runs, logs and artifacts are still recorded.
TEMPORARY_SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "false",
}


def configure_prefect_env() -> None:
    """Quiet defaults for a temporary Prefect server; explicit environment settings win."""
    if not os.environ.get("PREFECT_API_URL"):
        for key, value in TEMPORARY_SERVER_ENV.items():
            os.environ.setdefault(key, value)


def start_temporary_prefect_server() -> subprocess.Popen | None:
    """Start the temporary Prefect API server that a run without ``PREFECT_API_URL`` needs, *before*
    importing Prefect, so its start-up (~5 s) overlaps ours; point ``PREFECT_API_URL`` at it and
    stop it at exit. Spawned exactly as Prefect spawns its own. Returns None (Prefect then starts
    one itself) when an API URL is set or the server cannot be launched."""
    spec = importlib.util.find_spec("prefect")
    if os.environ.get("PREFECT_API_URL") or spec is None or not spec.submodule_search_locations:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.submodule_search_locations[0]).parent),
             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    atexit.register(_stop, process)
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    return process


def wait_for_prefect_server(process: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """Wait until the server answers ``/api/health``; on failure fall back to Prefect's own server."""
    import httpx

    url = os.environ["PREFECT_API_URL"] + "/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _stop(process)
    os.environ.pop("PREFECT_API_URL", None)
    return False


def temporary_server_settings():
    """Prefect settings for a flow run on the temporary server: no flow-run heartbeats. They let a
    lasting server mark a crashed run, but this server ends with the process, and the flow waits up
    to a second at exit for the heartbeat thread to stop. (An environment variable cannot say None.)"""
    from prefect.settings import temporary_settings

    return temporary_settings(updates={"flows.heartbeat_frequency": None})


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def already_built(args: argparse.Namespace) -> dict | None:
    """The statistics of a finished run of exactly these inputs in ``--out``
    (``flows.outdir.up_to_date``), or None: with ``--rebuild``, on a first run, or when the config or
    manifest cannot be read (the run's own checks report that). Imports no Prefect."""
    out = Path(args.out).resolve()
    if args.rebuild or not (out / "stats.json").exists():
        return None
    from flows.config import load_config
    from flows.outdir import run_inputs, up_to_date

    try:
        cfg = load_config(args.config, overrides_from_args(args))
        inputs = run_inputs(str(Path(args.manifest).resolve()), args.video_dir, args.limit, args.skip_invalid, cfg)
    except (ValueError, KeyError, OSError):  # pydantic's ValidationError is a ValueError
        return None
    return up_to_date(out, inputs)


def say_up_to_date(out: str, stats: dict) -> None:
    print(f"build-avrt: {out} is up to date ({stats['samples_in']} samples decided, {stats['samples_kept']} kept, "
          "from the same manifest, options and config); nothing to do. --rebuild runs the flow anyway "
          "(every call is still cached).", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.build_avrt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="build config YAML (teachers, merger, filter, media, sharding)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest or AVQA annotation JSON")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--limit", type=int, help="process only the first N samples")
    parser.add_argument("--video-dir", help="AVQA videos folder ({video_name}.mp4); default: the manifest's folder")
    parser.add_argument("--replace", action="store_true",
                        help="allow replacing --out's corpus when the manifest does not cover its kept rows")
    parser.add_argument("--rebuild", action="store_true",
                        help="run the flow even when --out already holds a finished run of the same manifest and config")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip manifest rows that fail validation (they are listed) instead of refusing the manifest")
    parser.add_argument("--vision-teacher", help="registry name of the vision teacher (keeps the config's base_url)")
    parser.add_argument("--audio-teacher", help="registry name of the audio teacher (keeps the config's base_url)")
    parser.add_argument("--merger", help="registry name of the merger (keeps the config's base_url)")
    parser.add_argument("--filter", choices=["both", "vision", "audio", "either", "all"],
                        help="which teachers must be right to keep a sample (default both, the paper)")
    parser.add_argument("--merger-kind", choices=["llm", "concat"], help="llm merger (paper) or concat baseline")
    parser.add_argument("--shard-size", type=int, help="samples per Prefect task (checkpoint and Dask unit)")
    parser.add_argument("--task-runner", choices=["thread", "dask"], help="thread (default) or dask")
    parser.add_argument("--dask-address", help="Dask scheduler address (default: a local cluster)")
    parser.add_argument("--cache-dir", help="content-addressed cache shared between runs (default OUT/cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, dotted, e.g. --set audio_teacher.temperature=0.5 (repeatable)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, key in (("vision_teacher", "vision_teacher"), ("audio_teacher", "audio_teacher"), ("merger", "merger"),
                      ("filter", "filter"), ("merger_kind", "merger_kind"), ("shard_size", "shard_size"),
                      ("task_runner", "task_runner"), ("dask_address", "dask_address"), ("cache_dir", "cache_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    return {**overrides, **set_overrides(args.set)}


def set_overrides(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as ``{key: value}`` (values parsed by the config loader)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    return overrides
