"""Shards: the unit of work of a Prefect task, and their atomic on-disk results."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from flows.cache import Cache, cache_key
from flows.config import BuildConfig
from media.files import atomic_write_bytes
from flows.manifest import Sample
from flows.stages import SampleProcessor, config_fingerprint


def shard_samples(samples: list[Sample], size: int) -> list[list[Sample]]:
    return [samples[i : i + size] for i in range(0, len(samples), max(1, size))]


def shard_key(samples: list[Sample], config: BuildConfig) -> str:
    return cache_key(samples=[s.to_dict() for s in samples], config=config_fingerprint(config))


def shard_path(outdir: Path, key: str) -> Path:
    return Path(outdir) / "work" / "shards" / f"{key}.jsonl"


def read_shard(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_shard(samples: list[Sample], config: BuildConfig, outdir: Path, in_flight_share: int = 1,
              on_sample=None) -> dict[str, Any]:
    """Process one shard (unless its result file exists) and write its rows atomically.

    Returns a summary: the shard's result path, row counts, cache hits/misses, calls sent, seconds.
    """
    outdir = Path(outdir)
    key = shard_key(samples, config)
    path = shard_path(outdir, key)
    if path.exists():
        rows = read_shard(path)
        if on_sample:
            on_sample(len(rows))
        return {"path": str(path), "rows": len(rows), "reused": True, "cache": {}, "calls": {}, "seconds": {}}
    cache = Cache(config.cache_dir or outdir / "cache")

    async def _run() -> tuple[list[dict[str, Any]], SampleProcessor]:
        processor = SampleProcessor(config, outdir, cache, in_flight_share)
        try:
            async def one(sample: Sample) -> dict[str, Any]:
                row = await processor.process(sample)
                if on_sample:
                    on_sample(1)
                return row

            return list(await asyncio.gather(*(one(s) for s in samples))), processor
        finally:
            await processor.close()

    rows, processor = asyncio.run(_run())
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return {"path": str(path), "rows": len(rows), "reused": False, "cache": cache.counts(),
            "calls": dict(processor.calls), "seconds": {k: round(v, 3) for k, v in processor.seconds.items()}}
