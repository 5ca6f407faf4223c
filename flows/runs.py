"""What build-avrt and build-questions share around their shards: the task runner, submitting the shards
with a progress bar and a Prefect progress artifact, the totals of the shards' summaries, what is left
pending, and the command line's run (refusals, the lock, the temporary Prefect server, exit status).
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from flows.build_args import EXIT_OK, EXIT_PENDING, EXIT_REFUSED, temporary_server_settings, wait_for_prefect_server
from flows.config import RunSettings
from flows.outdir import OutdirBusy, OutdirLock

UNFINISHED_STATE = "Unfinished"  # the flow run's state name when samples are left pending

_PROGRESS: dict[str, Any] = {}  # per-sample progress bars of in-process runs, keyed by outdir


def on_sample(outdir: str) -> Callable[[int], None]:
    """The progress callback of a shard task: advances the bar of ``outdir``'s run in this process, if any."""
    def update(n: int) -> None:
        bar = _PROGRESS.get(outdir)
        if bar is not None:
            bar.update(n)

    return update


def artifact(fn, **kwargs):
    """Artifacts are a UI nicety: never let them fail a run."""
    try:
        return fn(**kwargs)
    except Exception as err:  # pragma: no cover - depends on the Prefect backend
        get_run_logger().warning("artifact %s skipped: %s: %s", fn.__name__, type(err).__name__, err)
        return None


def make_task_runner(config: RunSettings, shards_at_once: int) -> tuple[Any, int]:
    """The task runner and the in-flight share (processes that split each replica's bound)."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            from distributed import Client

            with Client(config.dask_address, timeout=30) as client:
                workers = max(1, len(client.scheduler_info().get("workers", {})))
            return DaskTaskRunner(address=config.dask_address), workers
        workers = max(1, min(config.dask_workers, shards_at_once))
        threads = max(1, -(-shards_at_once // workers))
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": threads,
                                              "processes": True}), workers
    return ThreadPoolTaskRunner(max_workers=shards_at_once), 1


def process_shards(runner, task, shard_kwargs: list[dict[str, Any]], n_samples: int, label: str) -> list[dict[str, Any]]:
    """Submit ``task`` once per shard (``shard_kwargs[i]``, with ``index=i``) to ``runner`` (inside the
    flow: no subflow run to create and wait for); report progress as they finish."""
    with runner:
        futures = [runner.submit(task, {**kwargs, "index": i}) for i, kwargs in enumerate(shard_kwargs)]
        progress = artifact(create_progress_artifact, progress=0.0, description=f"{label}: samples decided")
        results, done = [], 0
        for future in as_completed(futures):
            summary = future.result()
            results.append(summary)
            done += summary["rows"]
            if progress is not None:
                artifact(update_progress_artifact, artifact_id=progress, progress=100.0 * done / max(1, n_samples))
    return sorted(results, key=lambda s: s["index"])


def run_shards(runner, task, shard_kwargs: list[dict[str, Any]], outdir: Path, n_samples: int, label: str,
               unit: str = "sample") -> list[dict[str, Any]]:
    """Every shard's summary (``process_shards``; each task gets ``run_id`` and ``out`` too), with a
    progress bar on the console."""
    bar = _PROGRESS[str(outdir)] = tqdm(total=n_samples, unit=unit, desc=label, disable=None)
    run_id = uuid.uuid4().hex
    try:
        return process_shards(runner, task, [{"run_id": run_id, "out": str(outdir), **kw} for kw in shard_kwargs],
                              n_samples, label)
    finally:
        bar.close()
        _PROGRESS.pop(str(outdir), None)


def pending_kind(pending: dict[str, str]) -> str:
    """``stage: cause`` of a pending sample, e.g. ``vision_teacher: timed out after 600 s``."""
    reason = pending["reason"]
    cause = reason[reason.rfind("(") + 1 : reason.rfind(")")] if reason.endswith(")") else reason
    return f"{pending['stage']}: {cause}"


def pending_reasons(pending: list[dict[str, str]]) -> dict[str, int]:
    return dict(Counter(pending_kind(p) for p in pending).most_common())


def unfinished_message(stats: dict[str, Any]) -> str | None:
    """What is left undone and why (None when every sample is decided): for the CLI and the flow run's state."""
    pending, stopped = stats["pending"], stats["stopped"]
    if not (pending["samples"] or stopped):
        return None
    reasons = "; ".join(f"{reason}: {n}" for reason, n in list(pending["reasons"].items())[:3])
    return (f"{pending['samples']} sample(s) pending" + (f"; stopped: {stopped}" if stopped else f" ({reasons})" if reasons else "")
            + ". Run the same command again to resume (finished work is kept).")


def totals(summaries: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Cache hits and misses per namespace, and calls sent per role, over the shards' summaries."""
    cache: dict[str, dict[str, int]] = {}
    calls: dict[str, int] = {}
    for s in summaries:
        for name, value in s["cache"].items():
            entry = cache.setdefault(name, {"hits": 0, "misses": 0})
            entry["hits"] += value["hits"]
            entry["misses"] += value["misses"]
        for role, n in s["calls"].items():
            calls[role] = calls.get(role, 0) + n
    return cache, calls


def publish_summary(key: str, summary: str) -> None:
    artifact(create_markdown_artifact, key=f"{key}-summary", markdown=f"```\n{summary}\n```")


def import_closing_modules() -> None:
    """Import what a run's last steps use (pandas and pyarrow for the corpus, matplotlib for the
    plot) while Prefect's temporary server is still starting, rather than after the last answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401


def run_cli(program: str, out: str, preflight: Callable[[], str | None], call_flow: Callable[[], Any],
            server=None) -> int:
    """A flow's command line after its arguments are read: refusals before any work (``preflight``, then
    the output folder's lock), the temporary Prefect ``server`` awaited, the flow run, and the exit
    status (``EXIT_PENDING`` with what is left when samples are pending)."""
    refusal = preflight()  # before the lock: a refused run writes nothing into --out
    if refusal:
        print(f"{program}: refused: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        lock = OutdirLock(Path(out), program).acquire()  # held through the flow (which takes it again)
    except OutdirBusy as err:
        print(f"{program}: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if server is not None:
            import_closing_modules()  # the server takes longer to start than these imports
            wait_for_prefect_server(server)
        with temporary_server_settings() if server is not None else contextlib.nullcontext():
            stats = call_flow()
    finally:
        lock.release()
    unfinished = unfinished_message(stats)
    if unfinished:
        print(f"{program}: {unfinished}", file=sys.stderr)
        return EXIT_PENDING
    return EXIT_OK
