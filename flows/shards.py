"""Shards: the unit of Prefect tasks, Dask distribution and checkpointing.

A shard's decided rows (kept or rejected; never pending ones) are appended to its journal
``work/shards/{key}.jsonl`` one line per sample, as each is decided. A re-run reads the journal and
processes only the samples it lacks. A line torn by a kill is dropped when the journal is reopened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.execution import Item, Processor, run_samples
from media.files import content_key

# Rows written by versions that froze transport failures as rejections: not verdicts, redone.
_LEGACY_TRANSIENT = ("teacher call failed:", "merger call failed:")
_LEGACY_TRANSIENT_CAUSES = ("gave up after", "timed out", "connection failed", "HTTP 429", "HTTP 5", "HTTP 401", "HTTP 403",
                            "HTTP 404", "malformed response")


def shard_samples(samples: list, size: int) -> list[list]:
    return [samples[i : i + size] for i in range(0, len(samples), max(1, size))]


def shard_key(samples: list, fingerprint: str) -> str:
    """The journal's name: the shard's items (each ``to_dict()``) and the config's fingerprint (what
    changes a row: ``flows.config.config_fingerprint``, ``flows.questions_config.questions_fingerprint``)."""
    return content_key(samples=[s.to_dict() for s in samples], config=fingerprint)


def shard_path(outdir: Path, key: str) -> Path:
    return Path(outdir) / "work" / "shards" / f"{key}.jsonl"


def is_verdict(row: dict[str, Any]) -> bool:
    """Whether a journal row is a final verdict (rows of older versions may record an outage)."""
    reason = str(row.get("reason", ""))
    return not (row.get("status") == "rejected" and any(t in reason for t in _LEGACY_TRANSIENT)
                and any(c in reason for c in _LEGACY_TRANSIENT_CAUSES))


def read_shard(path: Path) -> list[dict[str, Any]]:
    """The journal's verdict rows, one per sample id (the last wins); torn or foreign lines are skipped."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row and is_verdict(row):
            rows[row["id"]] = row
    return list(rows.values())


class Journal:
    """Append-only JSONL of one shard's decided rows; one line per ``append``, flushed at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        try:
            with open(self.path, "rb+") as handle:
                data = handle.read()
                if data and not data.endswith(b"\n"):
                    handle.truncate(data.rfind(b"\n") + 1)
        except FileNotFoundError:
            pass

    def append(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def run_shard(run_id: str, samples: list[Item], fingerprint: str, make_processor: Callable[[], Processor],
              outdir: Path, on_sample=None) -> dict[str, Any]:
    """Decide the shard's samples its journal lacks; returns a summary: journal path, decided rows,
    pending samples (``{"id", "stage", "reason"}``), whether nothing was left to do, cache counts,
    calls sent, seconds per stage, and the run-level failure that stopped the run (or None)."""
    outdir = Path(outdir)
    path = shard_path(outdir, shard_key(samples, fingerprint))
    done = {row["id"] for row in read_shard(path)}
    todo = [s for s in samples if s.id not in done]
    if on_sample and done:
        on_sample(len(done))
    summary = {"path": str(path), "reused": not todo, "pending": [], "cache": {}, "calls": {}, "seconds": {},
               "stopped": None}
    if todo:
        journal = Journal(path)
        try:
            def on_row(row: dict[str, Any]) -> None:
                journal.append(row)
                if on_sample:
                    on_sample(1)

            outcome = run_samples(run_id, todo, make_processor, outdir, on_row)
        finally:
            journal.close()
        tally = outcome.tally
        summary.update(pending=outcome.pending, stopped=outcome.stopped, cache=tally.cache(), calls=dict(tally.calls),
                       seconds={k: round(v, 3) for k, v in tally.seconds.items()})
    summary["rows"] = len(samples) - len(summary["pending"])
    return summary

