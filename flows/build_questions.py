"""build-questions: multiple-choice questions for clips that have none, as a Prefect flow
(``python -m flows.build_questions --help``; docs/questions.md).

The same machinery as build-avrt: the clips are sharded into Prefect tasks with checkpoint journals
(``flows.shards``), streamed through the process's execution core (``flows.execution``) by
``flows.question_stages.ClipProcessor``, with the call cache, the media store, the output folder's
lock and its pending/stop handling; then ``manifest.jsonl``, ``rejected/``, statistics, a plot and a
dataset card are written.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and bad flags, and start Prefect's server, before the heavy imports
    from flows.build_args import configure_prefect_env, start_temporary_prefect_server
    from flows.question_args import parse_args as _parse_args

    _CLI_ARGS = _parse_args()
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
from corpus.clips import Clip, ClipsError, manifest_clip_ids, manifest_row, read_captions, read_clips, with_captions
from corpus.manifest import no_media_found
from corpus.question_stats import plot_question_stats, question_stats, question_summary
from flows.execution import admitted_shards, stop_marker
from flows.outdir import OutdirLock, WouldDropRows, check_no_drop, clean_temp_in_background
from flows.question_args import overrides_from_args, parse_args
from flows.question_stages import ClipProcessor
from flows.questions_config import QuestionsConfig, load_questions_config, questions_fingerprint
from flows.runs import (
    UNFINISHED_STATE,
    artifact,
    make_task_runner,
    on_sample,
    pending_reasons,
    publish_summary,
    run_cli,
    run_shards,
    totals,
    unfinished_message,
)
from flows.shards import read_shard, run_shard, shard_samples
from media.files import atomic_write_bytes
from prompts import prompt_sha256

PROGRAM = "build-questions"


@lru_cache(maxsize=4)
def _clips(clips: str, mtime_ns: int, captions: str | None, captions_mtime_ns: int, limit: int | None,
           split: str) -> tuple[Clip, ...]:
    found = read_clips(clips, None, split)
    if captions:
        example = found[0].id
        found = with_captions(found, read_captions(captions))
        if not found:
            raise ClipsError(f"--captions {captions}: no caption matches a clip's id (e.g. {example!r})")
    return tuple(found[:limit] if limit else found)


def read_all_clips(clips: str, captions: str | None, limit: int | None, split: str = "train") -> list[Clip]:
    """The clips (with their captions when given), read once per process and version of the files."""
    def mtime(path: str | None) -> int:
        return Path(path).stat().st_mtime_ns if path and Path(path).exists() else 0

    return list(_clips(clips, mtime(clips), captions, mtime(captions), limit, split))


@task(name="process-clips", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def process_clips(run_id: str, clips: str, captions: str | None, limit: int | None, index: int,
                  config: dict[str, Any], out: str, in_flight_share: int) -> dict[str, Any]:
    """One shard's clips through the process's execution core; rows are journaled as decided."""
    cfg = QuestionsConfig.model_validate(config)
    shard = shard_samples(read_all_clips(clips, captions, limit, cfg.split), cfg.shard_size)[index]
    summary = run_shard(run_id, shard, questions_fingerprint(cfg), lambda: ClipProcessor(cfg, Path(out), in_flight_share),
                        Path(out), on_sample=on_sample(out))
    return {"index": index, **summary}


@flow(name="build-questions")
def build_questions(clips: str, out: str, config: str | None = None, captions: str | None = None,
                    limit: int | None = None, overrides: dict[str, Any] | None = None,
                    replace: bool = False) -> dict[str, Any] | State:
    """Write multiple-choice questions for CLIPS into OUT; returns the statistics (``pending`` and
    ``stopped`` say whether the run finished: re-run the same call to resume). A run that leaves clips
    pending ends in a completed state named ``Unfinished``, as build-avrt's does. A run whose clips do not
    cover every clip of OUT's manifest needs ``replace``; while a clip of it is pending, the outputs
    stay as they were."""
    log = get_run_logger()
    cfg = load_questions_config(config, overrides)
    outdir = Path(out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    clips_path, captions_path = str(Path(clips).resolve()), str(Path(captions).resolve()) if captions else None
    with OutdirLock(outdir, PROGRAM):
        if cfg.cache_dir is None:
            cfg = cfg.model_copy(update={"cache_dir": outdir / "cache"})
        cleaner = clean_temp_in_background(outdir, cfg.cache_dir)
        found = read_all_clips(clips_path, captions_path, limit, cfg.split)
        check_no_drop(outdir, {c.id for c in found}, replace, *_manifest_guard(outdir))
        stop_marker(outdir).unlink(missing_ok=True)
        n_shards = len(shard_samples(found, cfg.shard_size))
        at_once = admitted_shards(cfg, n_shards)
        runner, share = make_task_runner(cfg, at_once)
        log.info(f"{len(found)} clips in {n_shards} shard(s) of {cfg.shard_size} ({at_once} at once); "
                 f"kind={cfg.question_kind} " + " ".join(f"{r}={ep.model}" for r, ep in cfg.roles().items()))
        atomic_write_bytes(outdir / "config.resolved.json", cfg.model_dump_json(indent=2).encode())

        needs_media = cfg.vision_captioner is not None or not captions
        no_media = no_media_found(found, "clips") if needs_media else None
        shard_kwargs = [{"clips": clips_path, "captions": captions_path, "limit": limit,
                         "config": cfg.model_dump(mode="json"), "in_flight_share": share}] * n_shards
        summaries = [] if no_media else run_shards(runner, process_clips, shard_kwargs, outdir, len(found), PROGRAM, "clip")
        pending = [p for s in summaries for p in s["pending"]]
        pending += [{"id": c.id, "stage": "run", "reason": no_media} for c in found] if no_media else []
        stopped = no_media or next((s["stopped"] for s in summaries if s["stopped"]), None)
        wanted = {c.id for c in found}
        rows = list({r["id"]: r for s in summaries for r in read_shard(Path(s["path"])) if r["id"] in wanted}.values())
        held = manifest_clip_ids(outdir / "manifest.jsonl") & {p["id"] for p in pending}  # rows it could not re-decide
        stats = question_stats(rows, pending=len(pending))
        cache, calls = totals(summaries)
        stats.update(cache=cache, calls_sent=calls, shards={"total": n_shards, "reused": sum(s["reused"] for s in summaries)},
                     pending={"samples": len(pending), "manifest_left_unchanged": bool(held),
                              "reasons": pending_reasons(pending)}, stopped=stopped)
        if not (held or no_media):
            write_outputs(outdir, rows, cfg)
            card = dataset_card(stats, [cfg.split], model_table(cfg), {**cfg.model_dump(include={"question_kind", "question_words", "option_words"}),
                                                                         "blind_solver": cfg.blind_solver is not None},
                                "questions_card.md.j2")
            atomic_write_bytes(outdir / "README.md", card.encode())
            if rows:
                plot_question_stats(stats, [len(q["question"].split()) for r in rows for q in r.get("questions", [])],
                                    outdir / "stats.png")
        atomic_write_bytes(outdir / "stats.json", json.dumps(stats, indent=2).encode())
        summary = question_summary(stats, cache, calls, outdir)
        log.info("closing summary\n%s", summary)
        artifact(create_table_artifact, key="build-questions-funnel", description="clips and questions per stage",
                 table=[{"stage": k, "count": v} for part in ("clip_funnel", "question_funnel") for k, v in stats[part].items()])
        publish_summary("build-questions", summary)
        cleaner.join()
        unfinished = unfinished_message(stats)
        return Completed(name=UNFINISHED_STATE, message=unfinished, data=stats) if unfinished else stats


def write_outputs(outdir: Path, rows: list[dict[str, Any]], cfg: QuestionsConfig) -> None:
    """``manifest.jsonl`` (a row per kept question, clips in id order), ``rejected/clips.jsonl`` (clips dropped
    whole) and ``rejected/questions.jsonl`` (questions dropped), each written atomically."""
    manifest, clips, questions = [], [], []
    for row in sorted(rows, key=lambda r: r["id"]):
        media = {"video": row.get("video"), "audio": None if row.get("video") else row.get("source_audio")}
        provenance = {k: row.get(k) for k in ("captions", "caption_source", "models", "prompt_sha256") if k in row}
        for q in row.get("questions", []):
            manifest.append(manifest_row(row["id"], q["index"], media, q["question"], q["choices"], q["answer"],
                                         cfg.question_kind, row["split"], provenance))
        if row["status"] == "rejected":
            clips.append({k: row.get(k) for k in ("id", "split", "video", "source_audio", "stage", "reason", "captions")})
        questions += [{"clip_id": row["id"], **q, **provenance} for q in row.get("dropped_questions", [])]
    atomic_write_bytes(outdir / "manifest.jsonl", _jsonl(manifest))
    atomic_write_bytes(outdir / "rejected" / "clips.jsonl", _jsonl(clips))
    atomic_write_bytes(outdir / "rejected" / "questions.jsonl", _jsonl(questions))


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def model_table(cfg: QuestionsConfig) -> list[dict[str, str]]:
    """Each role's model, prompt (name and sha256) and sampling, for the dataset card."""
    return [{"role": role, "model": ep.model, "prompt": ep.prompt or "(none: media only)",
             "prompt_sha256": prompt_sha256(ep.prompt_text()), "sampling": json.dumps(ep.sampling())}
            for role, ep in cfg.roles().items()]


def _manifest_guard(outdir: Path) -> tuple[set[str], str]:
    """``check_no_drop``'s existing ids and wording for OUT's manifest."""
    return manifest_clip_ids(outdir / "manifest.jsonl"), "manifest.jsonl holds questions of {n} clip(s) these clips do not cover"


def _preflight(args) -> str | None:
    """Refusals a user should read before any work starts."""
    try:
        cfg = load_questions_config(args.config, overrides_from_args(args))
        if cfg.audio_captioner is None and not args.captions:
            return "the config has no audio_captioner: give one, or --captions FILE with the captions already made"
        found = read_all_clips(str(Path(args.clips).resolve()), str(Path(args.captions).resolve()) if args.captions else None,
                               args.limit, cfg.split)
        check_no_drop(Path(args.out).resolve(), {c.id for c in found}, args.replace, *_manifest_guard(Path(args.out).resolve()))
    except (ClipsError, KeyError, OSError, ValueError, WouldDropRows) as err:  # ValidationError: a ValueError
        return config_error(err, QuestionsConfig).strip('"')
    return None


def main(argv: list[str] | None = None) -> int:
    from flows.build_args import configure_prefect_env

    configure_prefect_env()
    args = _CLI_ARGS if argv is None and "_CLI_ARGS" in globals() else parse_args(argv)
    return run_cli(PROGRAM, args.out, lambda: _preflight(args),
                   lambda: build_questions(clips=args.clips, out=args.out, config=args.config, captions=args.captions,
                                           limit=args.limit, overrides=overrides_from_args(args), replace=args.replace),
                   globals().get("_PREFECT_SERVER"))


if __name__ == "__main__":
    import sys

    sys.exit(main())
