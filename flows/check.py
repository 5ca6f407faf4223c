"""Smoke-check the teacher and merger servers of a build config before a long run.

    python -m flows.check --config outputs/teachers.yaml --manifest data/AVQA/data/annotation/train_qa.json

Takes one sample of the manifest (the first valid one, or ``--sample ID``), extracts its frames and
audio exactly as build-avrt does, and sends it to every replica of the vision teacher, the audio
teacher and (with ``merger_kind: llm``) the merger, with the config's prompts and sampling. Nothing
is cached or written: each request really reaches its server. One line per request says what the
server answered: the teacher's parsed option against the gold letter, or whether the merged trace
passes the corpus's validation, and how long it took.

Exit status: 0 every endpoint answered; 1 an endpoint failed (unreachable, refused, timed out, not an
OpenAI chat server); 2 refused before any request (bad config or manifest, unusable media).
An answer that names no option, or a merged trace that fails validation, is a warning: one sample
can be hard, but if every sample does that, the run would keep nothing (check the prompt, think
mode and ``max_tokens``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Probe:
    """One request to one replica and what came of it."""

    role: str
    url: str
    model: str
    seconds: float
    verdict: str  # e.g. "C (gold C, right)", "valid trace (812 chars)"
    status: str  # "ok", "warn" or "fail"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="build config (YAML), as given to build-avrt")
    parser.add_argument("--manifest", required=True, help="JSONL manifest or AVQA annotation JSON")
    parser.add_argument("--video-dir", help="AVQA videos folder ({video_name}.mp4); default: the manifest's folder")
    parser.add_argument("--sample", help="id of the sample to send (default: the manifest's first valid row)")
    parser.add_argument("--split", help="split name of the manifest (default: the config's)")
    return parser.parse_args(argv)


def _single_url(config, role: str, url: str):
    """The config with ``role`` pointed at one replica and at most one retry (a check, not a run)."""
    from flows.config import endpoint

    field = {"vision": "vision_teacher", "audio": "audio_teacher", "merger": "merger"}[role]
    ep = endpoint(config, role)
    return config.model_copy(update={field: ep.model_copy(update={"base_url": [url], "retries": min(ep.retries, 1)}),
                                     "merger_attempts": 1})


async def probe_endpoints(config, sample, workdir: Path) -> list[Probe]:
    """Send ``sample`` to every replica of every role (see the module doc). Raises ``MediaError``."""
    from flows.config import endpoint
    from flows.stages import SampleProcessor, Tally
    from teachers.client import ModelCallError

    def processor(role: str, url: str) -> SampleProcessor:
        fresh = _single_url(config, role, url).model_copy(update={"cache_dir": workdir / f"cache-{time.monotonic_ns()}"})
        return SampleProcessor(fresh, workdir)

    first = processor("vision", endpoint(config, "vision").base_url[0])
    media = await first.media(sample, Tally())
    await first.close()
    probes: list[Probe] = []
    answers: dict[str, object] = {}  # the first teacher result per role, for the merger

    async def one(role: str, url: str) -> None:
        proc = processor(role, url)
        start = time.perf_counter()
        try:
            if role == "merger":
                merged, reason, _ = await proc.merge(sample, answers["vision"], answers["audio"], Tally())
                verdict, status = (f"valid trace ({len(merged)} chars)", "ok") if merged else (f"invalid trace: {reason}", "warn")
            else:
                result, parsed = await proc.ask_teacher(role, sample, media, Tally())
                answers.setdefault(role, result)
                if parsed.ok:
                    right = "right" if parsed.letter == sample.answer else "wrong"
                    verdict, status = f"{parsed.letter} (gold {sample.answer}, {right})", "ok"
                else:
                    verdict, status = f"no option named: {parsed.reason} (gold {sample.answer})", "warn"
        except ModelCallError as err:
            verdict, status = f"FAILED: {err.reason.removeprefix(f'{url}: ')}", "fail"
        finally:
            await proc.close()
        probes.append(Probe(role, url, endpoint(config, role).model, time.perf_counter() - start, verdict, status))

    teachers = [one(role, url) for role in ("vision", "audio") for url in endpoint(config, role).base_url]
    await asyncio.gather(*teachers)
    if config.merger_kind == "llm":
        if {"vision", "audio"} <= answers.keys():
            await asyncio.gather(*(one("merger", url) for url in endpoint(config, "merger").base_url))
        else:
            probes += [Probe("merger", url, config.merger.model, 0.0, "not checked: a teacher failed", "fail")
                       for url in config.merger.base_url]
    order = {"vision": 0, "audio": 1, "merger": 2}
    return sorted(probes, key=lambda p: (order[p.role], p.url))


def report(probes: list[Probe]) -> str:
    """The table printed by the command."""
    widths = [max(len(p.role) for p in probes), max(len(p.url) for p in probes), max(len(p.model) for p in probes)]
    mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    return "\n".join(f"{mark[p.status]}  {p.role:<{widths[0]}}  {p.url:<{widths[1]}}  {p.model:<{widths[2]}}  "
                     f"{p.seconds:6.1f} s  {p.verdict}" for p in probes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from configs import config_error
    from corpus.manifest import read_manifest
    from flows.config import BuildConfig, load_config
    from media import MediaError

    try:
        config = load_config(args.config)
        samples = read_manifest(args.manifest, args.video_dir, split=args.split or config.split).samples
    except (OSError, ValueError) as err:  # pydantic's ValidationError and ManifestError are ValueErrors
        print(f"check: refused: {config_error(err, BuildConfig)}", file=sys.stderr)
        return EXIT_REFUSED
    chosen = [s for s in samples if args.sample is None or s.id == args.sample][:1]
    if not chosen:
        print(f"check: refused: {'no valid sample' if args.sample is None else f'no valid sample with id {args.sample!r}'} "
              f"in {args.manifest}", file=sys.stderr)
        return EXIT_REFUSED
    sample = chosen[0]
    print(f"check: sample {sample.id!r} (gold {sample.answer}): {sample.question[:80]}")
    with tempfile.TemporaryDirectory(prefix="avrt-check-") as workdir:
        try:
            probes = asyncio.run(probe_endpoints(config, sample, Path(workdir)))
        except MediaError as err:
            print(f"check: refused: sample {sample.id!r} has unusable media ({err.reason}); pick another with --sample",
                  file=sys.stderr)
            return EXIT_REFUSED
    print(report(probes))
    failed = [p for p in probes if p.status == "fail"]
    warned = [p for p in probes if p.status == "warn"]
    if warned:
        print(f"check: {len(warned)} warning(s): if most samples answer like this, the run keeps nothing "
              "(check the prompt, think mode and max_tokens)")
    if failed:
        print(f"check: {len(failed)} of {len(probes)} request(s) failed; fix these endpoints before build-avrt",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"check: all {len(probes)} endpoint request(s) answered")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
