"""Guards of an output folder: one run at a time, no stale temporary files, no silent loss of kept
rows, and whether it already holds a finished run of the same inputs."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from corpus.store import kept_ids, parquet_files
from flows.config import BuildConfig, config_fingerprint
from media.files import content_key, digest_file, remove_stale_temp

LOCK_NAME = ".build-avrt.lock"


class OutdirBusy(RuntimeError):
    """Another live run holds the output folder."""


class WouldDropRows(RuntimeError):
    """The run would delete or replace kept rows it did not produce."""


_HELD: dict[Path, list] = {}  # lock path -> [open handle, holders in this process]
_HELD_GUARD = threading.Lock()


class OutdirLock:
    """An exclusive ``flock`` on ``OUT/.build-avrt.lock``, holding the owner's program (build-avrt or
    build-questions: one lock, so neither writes into a folder the other is writing), pid, host and start time.

    The kernel releases it when its process dies (even by kill -9), so a stale lock never blocks a
    later run; the file's text only serves the refusal message. Re-entrant within a process (the
    CLI takes it before the flow, which takes it again)."""

    def __init__(self, outdir: Path, program: str = "build-avrt"):
        self.path = Path(outdir).resolve() / LOCK_NAME
        self.program = program
        self._held = False

    def acquire(self) -> "OutdirLock":
        with _HELD_GUARD:
            if self.path in _HELD:
                _HELD[self.path][1] += 1
                self._held = True
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "{}"
                handle.close()
                raise OutdirBusy(f"{self.path.parent} is in use by another {_owner_program(owner)} run ({_owner_text(owner)}); "
                                 "wait for it to finish or choose another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"program": self.program, "pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
            handle.flush()
            _HELD[self.path] = [handle, 1]
            self._held = True
            return self

    def release(self) -> None:
        with _HELD_GUARD:
            if not self._held:
                return
            self._held = False
            entry = _HELD[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[self.path]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                entry[0].close()

    def __enter__(self) -> "OutdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _owner_program(owner: str) -> str:
    try:
        return str(json.loads(owner).get("program", "build-avrt"))
    except (ValueError, AttributeError):
        return "build-avrt"


def _owner_text(owner: str) -> str:
    try:
        data = json.loads(owner)
        return f"pid {data['pid']} on {data['host']}, started {data['started']}"
    except (ValueError, KeyError, TypeError):
        return "owner unknown"


def clean_temp_in_background(*roots: Path) -> threading.Thread:
    """Remove temporary files killed writers left under ``roots`` (see ``media.files.is_stale_temp``)
    in a daemon thread; join it before reporting. Live writers' files are never touched."""
    def work() -> None:
        for root in dict.fromkeys(Path(r) for r in roots):
            if root.exists():
                remove_stale_temp(root)

    thread = threading.Thread(target=work, name="avrt-clean-temp", daemon=True)
    thread.start()
    return thread


def dropped_ids(existing: set[str], kept_after: set[str]) -> set[str]:
    """Kept rows of the existing corpus that a new corpus would no longer hold."""
    return existing - kept_after


def check_no_drop(outdir: Path, sample_ids: set[str], replace: bool, existing: set[str] | None = None,
                  what: str = "corpus holds {n} kept row(s) this manifest does not cover") -> int:
    """Refuse a run whose inputs do not cover every kept row of ``OUT`` (``existing``: its corpus's ids by
    default; build-questions gives the clips of its manifest), unless ``replace``. Returns how many
    existing rows the run will drop (0 unless ``replace``)."""
    gone = dropped_ids(kept_ids(outdir) if existing is None else existing, sample_ids)
    if gone and not replace:
        example = ", ".join(sorted(gone)[:3])
        raise WouldDropRows(f"{outdir}/{what.format(n=len(gone))} (e.g. {example}); a run would delete them. "
                            "Pass --replace to replace them, or choose another --out")
    return len(gone)


def run_inputs(manifest: str, video_dir: str | None, limit: int | None, skip_invalid: bool, cfg: BuildConfig) -> str:
    """A digest of what decides a run's outputs: the manifest's bytes, how it is read, and the config's
    fingerprint (models, prompts, sampling, media, filter, merger). Recorded in ``stats.json``."""
    return content_key(manifest=digest_file(manifest), video_dir=video_dir, limit=limit, split=cfg.split,
                       skip_invalid=skip_invalid, config=config_fingerprint(cfg))


def up_to_date(outdir: Path, inputs: str) -> dict[str, Any] | None:
    """The statistics of a finished run of the same inputs whose outputs are all in ``outdir``
    (nothing pending, not stopped, corpus, rejected rows and card present), else None."""
    try:
        stats = json.loads((outdir / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    finished = stats.get("inputs") == inputs and not stats.get("stopped") and not stats.get("pending", {}).get("samples")
    kept, rejected = stats.get("samples_kept", 0), stats.get("samples_in", 0) - stats.get("samples_kept", 0)
    present = ((outdir / "README.md").exists() and bool(parquet_files(outdir, ("kept",))) == (kept > 0)
               and bool(parquet_files(outdir, ("rejected",))) == (rejected > 0))
    return stats if finished and present else None
