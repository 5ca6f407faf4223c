"""build-avrt: the AVRT data pipeline as a Prefect flow.

For each audio-visual multiple-choice sample: extract 8 frames and 10 s of 16 kHz audio, ask a
vision teacher about the frames and an audio teacher about the audio (each with its paper prompt),
parse each teacher's chosen option, keep the samples the filter policy accepts (default: both
teachers right), merge the two traces into ``<think>…</think><answer>X</answer>`` with a text LLM,
and write the corpus with statistics.

    python -m flows.build_avrt --config configs/build/demo.yaml --manifest clips/manifest.jsonl --out outputs/corpus

Outputs under ``--out``: ``corpus/{split}.parquet`` (kept), ``rejected/{split}.parquet`` (with
``stage`` and ``reason``), ``stats.json``, ``stats.png``, ``README.md`` (dataset card), ``media/``
or ``cache/`` (frames and audio the corpus points to), ``work/shards/`` (resumable shard results).
Every model call and every extraction is cached by content, so re-runs repeat no finished work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from media.files import atomic_write_bytes
from flows.card import dataset_card
from flows.config import BuildConfig, load_config
from flows.manifest import load_manifest
from flows.shards import read_shard, run_shard, shard_samples
from flows.stats import compute_stats, plot_stats, summary_text, token_counter

INTERNAL_COLUMNS = ["status", "stage", "reason", "vision_parse", "audio_parse"]
_PROGRESS: dict[str, Any] = {}  # per-sample progress bars of in-process runs, keyed by outdir


def _on_sample(outdir: str):
    def update(n: int) -> None:
        bar = _PROGRESS.get(outdir)
        if bar is not None:
            bar.update(n)

    return update


@task(name="process-shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def process_shard(manifest: str, video_dir: str | None, limit: int | None, index: int, config: dict[str, Any],
                  out: str, in_flight_share: int) -> dict[str, Any]:
    """One shard of samples through every stage; its rows land atomically in ``work/shards``."""
    cfg = BuildConfig.model_validate(config)
    samples = load_manifest(manifest, video_dir, limit, cfg.split)
    shard = shard_samples(samples, cfg.shard_size)[index]
    summary = run_shard(shard, cfg, Path(out), in_flight_share, on_sample=_on_sample(out))
    return {"index": index, **summary}


@flow(name="build-avrt-shards", log_prints=True)
def process_shards(manifest: str, video_dir: str | None, limit: int | None, n_shards: int, config: dict[str, Any],
                   out: str, n_samples: int) -> list[dict[str, Any]]:
    """Submit every shard to the task runner; report progress as they finish."""
    share = max(1, min(n_shards, BuildConfig.model_validate(config).max_concurrent_shards))
    futures = [process_shard.submit(manifest, video_dir, limit, i, config, out, share) for i in range(n_shards)]
    progress = _artifact(create_progress_artifact, progress=0.0, description="build-avrt: samples done")
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
        print(f"(artifact skipped: {type(err).__name__})")
        return None


def make_task_runner(config: BuildConfig):
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.max_concurrent_shards, "threads_per_worker": 1,
                                              "processes": True})
    return ThreadPoolTaskRunner(max_workers=config.max_concurrent_shards)


@flow(name="build-avrt", log_prints=True)
def build_avrt(manifest: str, out: str, config: str | None = None, limit: int | None = None,
               video_dir: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build an AVRT corpus from MANIFEST into OUT; returns the statistics."""
    cfg = load_config(config, overrides)
    outdir = Path(out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    if cfg.cache_dir is None:
        cfg = cfg.model_copy(update={"cache_dir": outdir / "cache"})
    samples = load_manifest(manifest, video_dir, limit, cfg.split)
    n_shards = len(shard_samples(samples, cfg.shard_size))
    print(f"build-avrt: {len(samples)} samples in {n_shards} shard(s) of {cfg.shard_size}; "
          f"vision={cfg.vision_teacher.model} audio={cfg.audio_teacher.model} "
          f"merger={cfg.merger.model if cfg.merger_kind == 'llm' else 'concat'} filter={cfg.filter}")
    atomic_write_bytes(outdir / "config.resolved.json", cfg.model_dump_json(indent=2).encode())

    bar = _PROGRESS[str(outdir)] = tqdm(total=len(samples), unit="sample", desc="build-avrt", disable=None)
    try:
        runner = make_task_runner(cfg)
        summaries = process_shards.with_options(task_runner=runner)(
            str(Path(manifest).resolve()), video_dir, limit, n_shards, cfg.model_dump(mode="json"), str(outdir), len(samples))
    finally:
        bar.close()
        _PROGRESS.pop(str(outdir), None)

    rows = assemble(outdir, summaries)
    stats = compute_stats(rows, *token_counter(cfg.stats_tokenizer))
    cache, calls = _totals(summaries)
    stats["cache"], stats["calls_sent"] = cache, calls
    stats["shards"] = {"total": n_shards, "reused": sum(s["reused"] for s in summaries)}
    atomic_write_bytes(outdir / "stats.json", json.dumps(stats, indent=2).encode())
    atomic_write_bytes(outdir / "README.md", dataset_card(stats, cfg, sorted({r["split"] for r in rows})).encode())
    plot_stats(stats, outdir / "stats.png")
    summary = summary_text(stats, cache, calls, outdir)
    print(summary)
    _publish(stats, summary)
    return stats


def assemble(outdir: Path, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gather shard rows (one per sample id) into corpus/ and rejected/ parquet files, atomically."""
    by_id: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        for row in read_shard(Path(summary["path"])):
            by_id[row["id"]] = row
    rows = list(by_id.values())
    for name, status in (("corpus", "kept"), ("rejected", "rejected")):
        folder = outdir / name
        folder.mkdir(exist_ok=True)
        frame = pd.DataFrame([r for r in rows if r["status"] == status])
        splits = sorted(frame["split"].unique()) if len(frame) else []
        for stale in folder.glob("*.parquet"):
            if stale.stem not in splits:
                stale.unlink()
        for split in splits:
            part = frame[frame["split"] == split]
            if status == "kept":
                part = part.drop(columns=[c for c in INTERNAL_COLUMNS if c in part.columns])
            part = part.dropna(axis=1, how="all").reset_index(drop=True)
            tmp = folder / f".{split}.parquet.tmp"
            part.to_parquet(tmp, index=False)
            os.replace(tmp, folder / f"{split}.parquet")
    return rows


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
    table = [{"stage": k, "samples": v} for k, v in stats["funnel"].items()]
    reasons = [{"stage": s, "reason": r, "samples": n} for s, rs in stats["reasons"].items() for r, n in rs.items()]
    _artifact(create_table_artifact, key="build-avrt-funnel", table=table, description="samples remaining per stage")
    if reasons:
        _artifact(create_table_artifact, key="build-avrt-reasons", table=reasons, description="why samples were dropped")
    _artifact(create_markdown_artifact, key="build-avrt-summary", markdown=f"```\n{summary}\n```")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.build_avrt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="build config YAML (teachers, merger, filter, media, sharding)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest or AVQA annotation JSON")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--limit", type=int, help="process only the first N samples")
    parser.add_argument("--video-dir", help="AVQA videos folder ({video_name}.mp4); default: the manifest's folder")
    parser.add_argument("--vision-teacher", help="registry name of the vision teacher (keeps the config's base_url)")
    parser.add_argument("--audio-teacher", help="registry name of the audio teacher (keeps the config's base_url)")
    parser.add_argument("--merger", help="registry name of the merger (keeps the config's base_url)")
    parser.add_argument("--filter", choices=["both", "vision", "audio", "either", "all"],
                        help="which teachers must be right to keep a sample (default both, the paper)")
    parser.add_argument("--merger-kind", choices=["llm", "concat"], help="llm merger (paper) or concat baseline")
    parser.add_argument("--shard-size", type=int, help="samples per Prefect task")
    parser.add_argument("--task-runner", choices=["thread", "dask"], help="thread (default) or dask")
    parser.add_argument("--dask-address", help="Dask scheduler address (default: a local cluster)")
    parser.add_argument("--cache-dir", help="content-addressed cache shared between runs (default OUT/cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, dotted, e.g. --set audio_teacher.temperature=0.5 (repeatable)")
    return parser.parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, key in (("vision_teacher", "vision_teacher"), ("audio_teacher", "audio_teacher"), ("merger", "merger"),
                      ("filter", "filter"), ("merger_kind", "merger_kind"), ("shard_size", "shard_size"),
                      ("task_runner", "task_runner"), ("dask_address", "dask_address"), ("cache_dir", "cache_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build_avrt(manifest=args.manifest, out=args.out, config=args.config, limit=args.limit,
               video_dir=args.video_dir, overrides=overrides_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
