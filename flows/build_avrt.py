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

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

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
from flows.config import ROLES, BuildConfig, config_fingerprint, endpoint, load_config
from flows.execution import admitted_shards, stop_marker
from flows.outdir import OutdirLock, WouldDropRows, check_no_drop, clean_temp_in_background, run_inputs
from flows.runs import (  # noqa: F401  (UNFINISHED_STATE, unfinished_message, pending_kind: build-avrt's names too)
    UNFINISHED_STATE,
    artifact,
    make_task_runner,
    on_sample,
    pending_kind,
    pending_reasons,
    publish_summary,
    run_cli,
    run_shards,
    totals,
    unfinished_message,
)
from flows.shards import read_shard, run_shard, shard_samples
from flows.stages import SampleProcessor
from media.files import atomic_write_bytes
from prompts import prompt_sha256


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
    summary = run_shard(run_id, shard, config_fingerprint(cfg), lambda: SampleProcessor(cfg, Path(out), in_flight_share),
                        Path(out), on_sample=on_sample(out))
    return {"index": index, **summary}


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
        shard_kwargs = [{"manifest": str(Path(manifest).resolve()), "video_dir": video_dir, "limit": limit,
                         "skip_invalid": skip_invalid, "config": cfg.model_dump(mode="json"), "in_flight_share": share}
                        ] * n_shards
        summaries = [] if no_media else run_shards(runner, process_shard, shard_kwargs, outdir, len(samples), "build-avrt")
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
        cache, calls = totals(summaries)
        stats["cache"], stats["calls_sent"] = cache, calls
        stats["shards"] = {"total": n_shards, "reused": sum(s["reused"] for s in summaries)}
        stats["pending"] = {"samples": len(pending), "corpus_left_unchanged": bool(held),
                            "reasons": pending_reasons(pending)}
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


def media_folder_problem(samples: list[Sample]) -> str | None:
    """A run-level stop when no sample's media can be found (the folder is wrong, not the samples: nothing
    is rejected, every sample stays pending), naming the folder tried and ``--video-dir``; else None."""
    problem = no_media_found(samples, "samples")
    return f"{problem}; give --video-dir DIR, the folder that holds them" if problem else None


def model_table(cfg: BuildConfig) -> list[dict[str, str]]:
    """Each role's model, prompt (name and sha256) and sampling, for the dataset card."""
    return [{"role": role, "model": ep.model, "prompt": ep.prompt, "prompt_sha256": prompt_sha256(ep.prompt_text()),
             "sampling": json.dumps(ep.sampling())} for role in ROLES for ep in [endpoint(cfg, role)]]


def _publish(stats: dict[str, Any], summary: str) -> None:
    table = [{"stage": "pending (re-run to resume)" if k == "pending" else k, "samples": v}
             for k, v in stats["funnel"].items()]
    reasons = [{"stage": s, "reason": r, "samples": n} for s, rs in stats["reasons"].items() for r, n in rs.items()]
    reasons += [{"stage": "pending", "reason": r, "samples": n} for r, n in stats["pending"]["reasons"].items()]
    artifact(create_table_artifact, key="build-avrt-funnel", table=table, description="samples remaining per stage")
    if reasons:
        artifact(create_table_artifact, key="build-avrt-reasons", table=reasons, description="why samples were dropped or are pending")
    publish_summary("build-avrt", summary)


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


def main(argv: list[str] | None = None) -> int:
    from flows.build_args import configure_prefect_env

    configure_prefect_env()
    from_preamble = argv is None and "_CLI_ARGS" in globals()
    args = _CLI_ARGS if from_preamble else parse_args(argv)
    done = None if from_preamble else already_built(args)  # the preamble has asked already
    if done is not None:
        say_up_to_date(args.out, done)
        return EXIT_OK
    return run_cli("build-avrt", args.out, lambda: _preflight(args),
                   lambda: build_avrt(manifest=args.manifest, out=args.out, config=args.config, limit=args.limit,
                                      video_dir=args.video_dir, overrides=overrides_from_args(args),
                                      replace=args.replace, skip_invalid=args.skip_invalid),
                   globals().get("_PREFECT_SERVER"))


if __name__ == "__main__":
    import sys

    sys.exit(main())
