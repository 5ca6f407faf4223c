"""build-avrt: the AVRT data pipeline as a Prefect flow (``python -m flows.build_avrt --help``).

The flow shards the manifest (Prefect tasks, Dask's unit of distribution, checkpoint journals),
runs the samples through the process's streaming execution core (``flows.execution``), and
assembles ``corpus/`` and ``rejected/`` with statistics. The command line lives in
``flows.build_args`` so that ``--help`` answers before Prefect is imported.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and bad flags, and start Prefect's server, before the heavy imports
    from flows.build_args import already_built, configure_prefect_env, say_up_to_date, start_temporary_prefect_server
    from flows.build_args import parse_args as _parse_args

    _CLI_ARGS = _parse_args()
    _DONE = already_built(_CLI_ARGS)  # an unchanged re-run ends here, before Prefect is imported
    if _DONE is not None:
        import sys

        say_up_to_date(_CLI_ARGS.out, _DONE)
        sys.exit(0)
    configure_prefect_env()
    _PREFECT_SERVER = start_temporary_prefect_server()

import contextlib
import json
import sys
import uuid
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from configs import config_error
from corpus.card import dataset_card
from corpus.manifest import (
    ManifestError,
    ManifestReading,
    Sample,
    checked_reading,
    media_folder,
    no_media_found,
)
from corpus.stats import compute_stats, plot_stats, summary_text, token_counter
from corpus.store import assemble, kept_ids
from flows.build_args import (  # noqa: F401
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    already_built,
    overrides_from_args,
    parse_args,
    say_up_to_date,
)
from flows.config import ROLES, BuildConfig, endpoint, load_config
from flows.execution import admitted_shards, stop_marker
from flows.outdir import OutdirBusy, OutdirLock, WouldDropRows, check_no_drop, clean_temp_in_background, run_inputs
from flows.shards import read_shard, run_shard, shard_samples
from media.files import atomic_write_bytes
from prompts import prompt_sha256

_PROGRESS: dict[str, Any] = {}  # per-sample progress bars of in-process runs, keyed by outdir


def _on_sample(outdir: str):
    def update(n: int) -> None:
        bar = _PROGRESS.get(outdir)
        if bar is not None:
            bar.update(n)

    return update


@lru_cache(maxsize=4)
def _reading(manifest: str, mtime_ns: int, video_dir: str | None, limit: int | None, split: str,
             skip_invalid: bool) -> ManifestReading:
    """The manifest, read and checked once per process (every shard task of a process shares it)."""
    return checked_reading(manifest, video_dir, limit, split, skip_invalid)


def read_checked(manifest: str, video_dir: str | None, limit: int | None, split: str,
                 skip_invalid: bool = False) -> ManifestReading:
    """The manifest's valid samples and (with ``skip_invalid``) its invalid rows; raises ManifestError.
    Cached per manifest version and media folder (a default folder is resolved first: it may appear)."""
    path = Path(manifest)
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    return _reading(str(path), mtime, str(media_folder(path, video_dir)), limit, split, skip_invalid)


def read_samples(manifest: str, video_dir: str | None, limit: int | None, split: str,
                 skip_invalid: bool = False) -> list[Sample]:
    return list(read_checked(manifest, video_dir, limit, split, skip_invalid).samples)


@task(name="process-shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def process_shard(run_id: str, manifest: str, video_dir: str | None, limit: int | None, skip_invalid: bool,
                  index: int, config: dict[str, Any], out: str, in_flight_share: int) -> dict[str, Any]:
    """One shard's samples through the process's execution core; rows are journaled as decided."""
    cfg = BuildConfig.model_validate(config)
    shard = shard_samples(read_samples(manifest, video_dir, limit, cfg.split, skip_invalid), cfg.shard_size)[index]
    summary = run_shard(run_id, shard, cfg, Path(out), in_flight_share, on_sample=_on_sample(out))
    return {"index": index, **summary}


def process_shards(runner, run_id: str, manifest: str, video_dir: str | None, limit: int | None, skip_invalid: bool,
                   n_shards: int, config: dict[str, Any], out: str, n_samples: int,
                   in_flight_share: int) -> list[dict[str, Any]]:
    """Submit every shard to ``runner`` (inside the flow: no subflow run to create and wait for);
    report progress as they finish."""
    with runner:
        futures = [runner.submit(process_shard, {"run_id": run_id, "manifest": manifest, "video_dir": video_dir,
                                                 "limit": limit, "skip_invalid": skip_invalid, "index": i,
                                                 "config": config, "out": out, "in_flight_share": in_flight_share})
                   for i in range(n_shards)]
        progress = _artifact(create_progress_artifact, progress=0.0, description="build-avrt: samples decided")
        results, done = [], 0
        for future in as_completed(futures):
            summary = future.result()
            results.append(summary)
            done += summary["rows"]
            if progress is not None:
                _artifact(update_progress_artifact, artifact_id=progress, progress=100.0 * done / max(1, n_samples))
    return sorted(results, key=lambda s: s["index"])


def _artifact(fn, **kwargs):
    """Artifacts are a UI nicety: never let them fail a run."""
    try:
        return fn(**kwargs)
    except Exception as err:  # pragma: no cover - depends on the Prefect backend
        get_run_logger().warning("artifact %s skipped: %s: %s", fn.__name__, type(err).__name__, err)
        return None


def make_task_runner(config: BuildConfig, shards_at_once: int) -> tuple[Any, int]:
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


UNFINISHED_STATE = "Unfinished"  # the flow run's state name when samples are left pending


@flow(name="build-avrt")
def build_avrt(manifest: str, out: str, config: str | None = None, limit: int | None = None,
               video_dir: str | None = None, overrides: dict[str, Any] | None = None, replace: bool = False,
               skip_invalid: bool = False) -> dict[str, Any] | State:
    """Build an AVRT corpus from MANIFEST into OUT; returns the statistics (``pending`` and
    ``stopped`` say whether the run finished: re-run the same call to resume).

    A run that leaves samples pending ends in a completed state named ``Unfinished`` whose message
    gives the count and the reason, so the Prefect UI does not show it as ``Completed``; calling the
    flow still returns the statistics."""
    log = get_run_logger()
    cfg = load_config(config, overrides)
    outdir = Path(out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    with OutdirLock(outdir):
        if cfg.cache_dir is None:
            cfg = cfg.model_copy(update={"cache_dir": outdir / "cache"})
        cleaner = clean_temp_in_background(outdir, cfg.cache_dir)
        reading = read_checked(str(Path(manifest).resolve()), video_dir, limit, cfg.split, skip_invalid)
        inputs = run_inputs(str(Path(manifest).resolve()), video_dir, limit, skip_invalid, cfg)
        samples = list(reading.samples)
        dropping = check_no_drop(outdir, {s.id for s in samples}, replace)
        stop_marker(outdir).unlink(missing_ok=True)
        n_shards = len(shard_samples(samples, cfg.shard_size))
        at_once = admitted_shards(cfg, n_shards)
        runner, share = make_task_runner(cfg, at_once)
        log.info(f"{len(samples)} samples in {n_shards} shard(s) of {cfg.shard_size} ({at_once} at once); "
              f"vision={cfg.vision_teacher.model} audio={cfg.audio_teacher.model} "
              f"merger={cfg.merger.model if cfg.merger_kind == 'llm' else 'concat'} filter={cfg.filter}"
              + (f"; replacing a corpus with {dropping} row(s) this manifest does not cover" if dropping else ""))
        if reading.invalid:
            listed = str(ManifestError.from_rows(Path(manifest), reading.invalid, len(samples) + len(reading.invalid)))
            log.warning(f"--skip-invalid: {listed}\n  (recorded in rejected/ with stage 'manifest')")
        atomic_write_bytes(outdir / "config.resolved.json", cfg.model_dump_json(indent=2).encode())

        no_media = media_folder_problem(samples)
        summaries = [] if no_media else _run_shards(runner, manifest, video_dir, limit, skip_invalid, n_shards, cfg,
                                                    outdir, len(samples), share)
        pending = [p for s in summaries for p in s["pending"]]
        pending += [{"id": s.id, "stage": "run", "reason": no_media} for s in samples] if no_media else []
        stopped = no_media or next((s["stopped"] for s in summaries if s["stopped"]), None)
        rows = [row for s in summaries for row in read_shard(Path(s["path"]))]
        wanted = {s.id for s in samples}
        rows = list({r["id"]: r for r in rows if r["id"] in wanted}.values())
        rows += [invalid.rejected_row() for invalid in reading.invalid]  # --skip-invalid: stage "manifest"
        held = kept_ids(outdir) & {p["id"] for p in pending}  # kept rows this run could not re-decide
        if not (held or no_media):  # with no media found, nothing was decided: outputs stay as they were
            assemble(outdir, rows)
        stats = compute_stats(rows, *token_counter(cfg.stats_tokenizer), pending=len(pending))
        cache, calls = _totals(summaries)
        stats["cache"], stats["calls_sent"] = cache, calls
        stats["shards"] = {"total": n_shards, "reused": sum(s["reused"] for s in summaries)}
        stats["pending"] = {"samples": len(pending), "corpus_left_unchanged": bool(held),
                            "reasons": dict(Counter(pending_kind(p) for p in pending).most_common())}
        stats["stopped"] = stopped
        stats["inputs"] = inputs
        atomic_write_bytes(outdir / "stats.json", json.dumps(stats, indent=2).encode())
        if not (held or no_media):
            card = dataset_card(stats, sorted({r["split"] for r in rows}), model_table(cfg),
                                {"filter": cfg.filter, "merger_kind": cfg.merger_kind, **cfg.media.model_dump()})
            atomic_write_bytes(outdir / "README.md", card.encode())
            if rows:
                plot_stats(stats, outdir / "stats.png")
        summary = summary_text(stats, cache, calls, outdir)
        log.info("closing summary\n%s", summary)  # also a markdown artifact in the Prefect UI
        _publish(stats, summary)
        cleaner.join()
        unfinished = unfinished_message(stats)
        return Completed(name=UNFINISHED_STATE, message=unfinished, data=stats) if unfinished else stats


def _run_shards(runner, manifest: str, video_dir: str | None, limit: int | None, skip_invalid: bool, n_shards: int,
                cfg: BuildConfig, outdir: Path, n_samples: int, share: int) -> list[dict[str, Any]]:
    """Every shard's summary (``process_shards``), with a progress bar on the console."""
    bar = _PROGRESS[str(outdir)] = tqdm(total=n_samples, unit="sample", desc="build-avrt", disable=None)
    try:
        return process_shards(runner, uuid.uuid4().hex, str(Path(manifest).resolve()), video_dir, limit, skip_invalid,
                              n_shards, cfg.model_dump(mode="json"), str(outdir), n_samples, share)
    finally:
        bar.close()
        _PROGRESS.pop(str(outdir), None)


def media_folder_problem(samples: list[Sample]) -> str | None:
    """A run-level stop when no sample's media can be found (the folder is wrong, not the samples: nothing
    is rejected, every sample stays pending), naming the folder tried and ``--video-dir``; else None."""
    problem = no_media_found(samples, "samples")
    return f"{problem}; give --video-dir DIR, the folder that holds them" if problem else None


def unfinished_message(stats: dict[str, Any]) -> str | None:
    """What is left undone and why (None when every sample is decided): for the CLI and the flow run's state."""
    pending, stopped = stats["pending"], stats["stopped"]
    if not (pending["samples"] or stopped):
        return None
    reasons = "; ".join(f"{reason}: {n}" for reason, n in list(pending["reasons"].items())[:3])
    return (f"{pending['samples']} sample(s) pending" + (f"; stopped: {stopped}" if stopped else f" ({reasons})" if reasons else "")
            + ". Run the same command again to resume (finished work is kept).")


def model_table(cfg: BuildConfig) -> list[dict[str, str]]:
    """Each role's model, prompt (name and sha256) and sampling, for the dataset card."""
    return [{"role": role, "model": ep.model, "prompt": ep.prompt, "prompt_sha256": prompt_sha256(ep.prompt_text()),
             "sampling": json.dumps(ep.sampling())} for role in ROLES for ep in [endpoint(cfg, role)]]


def pending_kind(pending: dict[str, str]) -> str:
    """``stage: cause`` of a pending sample, e.g. ``vision_teacher: timed out after 600 s``."""
    reason = pending["reason"]
    cause = reason[reason.rfind("(") + 1 : reason.rfind(")")] if reason.endswith(")") else reason
    return f"{pending['stage']}: {cause}"


def _totals(summaries: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
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


def _publish(stats: dict[str, Any], summary: str) -> None:
    table = [{"stage": "pending (re-run to resume)" if k == "pending" else k, "samples": v}
             for k, v in stats["funnel"].items()]
    reasons = [{"stage": s, "reason": r, "samples": n} for s, rs in stats["reasons"].items() for r, n in rs.items()]
    reasons += [{"stage": "pending", "reason": r, "samples": n} for r, n in stats["pending"]["reasons"].items()]
    _artifact(create_table_artifact, key="build-avrt-funnel", table=table, description="samples remaining per stage")
    if reasons:
        _artifact(create_table_artifact, key="build-avrt-reasons", table=reasons, description="why samples were dropped or are pending")
    _artifact(create_markdown_artifact, key="build-avrt-summary", markdown=f"```\n{summary}\n```")


def _preflight(args) -> str | None:
    """Refusals a user should read before any work starts (the flow checks again under its lock)."""
    try:
        cfg = load_config(args.config, overrides_from_args(args))
        samples = read_samples(str(Path(args.manifest).resolve()), args.video_dir, args.limit, cfg.split,
                               args.skip_invalid)
        check_no_drop(Path(args.out).resolve(), {s.id for s in samples}, args.replace)
    except (ManifestError, KeyError, OSError, WouldDropRows, ValueError) as err:  # ValidationError: a ValueError
        return config_error(err, BuildConfig).strip('"')
    return None


def _import_closing_modules() -> None:
    """Import what a run's last steps use (pandas and pyarrow for the corpus, matplotlib for the
    plot) while Prefect's temporary server is still starting, rather than after the last answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    from flows.build_args import configure_prefect_env

    configure_prefect_env()
    from_preamble = argv is None and "_CLI_ARGS" in globals()
    args = _CLI_ARGS if from_preamble else parse_args(argv)
    done = None if from_preamble else already_built(args)  # the preamble has asked already
    if done is not None:
        say_up_to_date(args.out, done)
        return EXIT_OK
    refusal = _preflight(args)  # before the lock: a refused run writes nothing into --out
    if refusal:
        print(f"build-avrt: refused: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        lock = OutdirLock(Path(args.out)).acquire()  # held through the flow (which takes it again)
    except OutdirBusy as err:
        print(f"build-avrt: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        server = globals().get("_PREFECT_SERVER")
        if server is not None:
            from flows.build_args import temporary_server_settings, wait_for_prefect_server

            _import_closing_modules()  # the server takes longer to start than these imports
            wait_for_prefect_server(server)
        with temporary_server_settings() if server is not None else contextlib.nullcontext():
            stats = build_avrt(manifest=args.manifest, out=args.out, config=args.config, limit=args.limit,
                               video_dir=args.video_dir, overrides=overrides_from_args(args), replace=args.replace,
                               skip_invalid=args.skip_invalid)
    finally:
        lock.release()
    unfinished = unfinished_message(stats)
    if unfinished:
        print(f"build-avrt: {unfinished}", file=sys.stderr)
        return EXIT_PENDING
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
