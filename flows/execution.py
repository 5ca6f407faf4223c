"""The flows' execution core (build-avrt, build-questions): every sample of a process streams through one event loop.

This module and the per-replica semaphore in ``teachers.client.ModelClient`` are the only places
that decide concurrency:

* **One loop per process.** Every shard (Prefect task) running in a process hands its samples to
  one event loop thread (``_Engine``) and waits for them. Per run, that loop holds one processor
  (``flows.stages.SampleProcessor`` for build-avrt, ``flows.question_stages.ClipProcessor`` for
  build-questions; one client per role), so ``max_in_flight`` bounds the requests in flight per
  replica for the whole process, however many shards run in it. Shards reserve no concurrency.
* **Streaming.** Each sample goes media -> both teachers at once -> merger the moment both answered.
  A slot freed by one call goes to the next waiting call (the semaphores are FIFO), so no slot idles
  while admitted work remains.
* **Admission.** ``admitted_shards`` runs enough shards at once that, even while some shards wait for
  their slowest samples, the admitted samples outnumber the slots many times over (32 per slot,
  at most 256 shards).
* **Dask.** Each worker process has its own loop; the bound is split evenly, each of ``W`` workers
  getting ``max_in_flight // W`` per replica (at least 1), so the cluster never exceeds the bound.
  A cluster-wide ``distributed.Semaphore`` would cost a scheduler round trip per request.
* **Checkpoints.** Every decided row is appended to its shard's journal the moment it is decided
  (``flows.shards``): a kill loses at most the calls in flight.
* **Stopping.** An ``EndpointError`` stops every sample of the run in the process (they stay pending)
  and leaves a ``work/STOPPED`` marker that shards in other processes read before starting.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flows.config import RunSettings
from flows.stages import Tally
from media.files import atomic_write_bytes
from teachers.client import EndpointError

# Admitted samples per in-flight slot of the busiest endpoint. A shard holds its place until its
# slowest sample is decided; with heavy-tailed latency (bench/pipeline.py --heavy) 8 per slot left
# 32 slots idle 7% of the time, 32 per slot matched sending everything at once within noise.
ADMIT_PER_SLOT = 32
MAX_SHARDS_AT_ONCE = 256  # shards are threads (or Dask task slots) while they wait


def stop_marker(outdir: Path) -> Path:
    return Path(outdir) / "work" / "STOPPED"


def admitted_shards(config: RunSettings, n_shards: int) -> int:
    """Shards to run at once: ``max_concurrent_shards`` if set, else enough to admit
    ``ADMIT_PER_SLOT`` samples per slot of the endpoint with the most slots."""
    if config.max_concurrent_shards:
        return max(1, min(n_shards, config.max_concurrent_shards))
    slots = max(ep.max_in_flight * len(ep.base_url) for ep in config.endpoints())
    wanted = math.ceil(ADMIT_PER_SLOT * slots / max(1, config.shard_size)) + 1
    return max(1, min(n_shards, wanted, MAX_SHARDS_AT_ONCE))


@dataclass
class ShardOutcome:
    """What happened to a shard's samples in this call."""

    decided: int = 0
    pending: list[dict[str, str]] = field(default_factory=list)  # {"id", "stage", "reason"}
    stopped: str | None = None  # the run-level failure that stopped the run, if any
    tally: Tally = field(default_factory=Tally)


class Item(Protocol):
    """What the core needs of a sample: its id (a manifest ``Sample``, a ``Clip``)."""

    id: str


class Processor(Protocol):
    """Decides one item: a row with ``status`` kept, rejected or pending; raises ``EndpointError`` to stop
    the run. Created in the engine's loop (``make_processor``), closed when the run's last shard ends."""

    async def process(self, item: Any, tally: Tally) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass
class _Run:
    processor: Processor
    users: int = 0
    stopped: str | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)


class _Engine:
    """The process's event loop thread and the runs living in it (touched only from that loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs: dict[str, _Run] = {}
        threading.Thread(target=self.loop.run_forever, name="avrt-engine", daemon=True).start()

    def run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def open(self, run_id: str, make_processor: Callable[[], Processor]) -> _Run:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = _Run(make_processor())
        run.users += 1
        return run

    async def release(self, run_id: str) -> None:
        run = self.runs[run_id]
        run.users -= 1
        if run.users == 0:
            del self.runs[run_id]
            await run.processor.close()


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def run_samples(run_id: str, samples: list[Item], make_processor: Callable[[], Processor], outdir: Path,
                on_row: Callable[[dict[str, Any]], None]) -> ShardOutcome:
    """Process ``samples`` in the process's engine, with the run's processor (``make_processor()``, called
    in the engine's loop by the run's first shard in this process); ``on_row(row)`` gets each decided row
    as it is decided (in the engine's thread). Returns the shard's outcome; never raises for a sample."""
    marker = stop_marker(outdir)
    if marker.exists():
        reason = marker.read_text(encoding="utf-8")
        return ShardOutcome(pending=[_pending(s, "run", reason) for s in samples], stopped=reason)
    eng = engine()
    return eng.run(_run_samples(eng, run_id, samples, make_processor, Path(outdir), on_row))


async def _run_samples(eng: _Engine, run_id: str, samples: list[Item], make_processor: Callable[[], Processor],
                       outdir: Path, on_row: Callable[[dict[str, Any]], None]) -> ShardOutcome:
    run = await eng.open(run_id, make_processor)
    outcome = ShardOutcome()
    try:
        async def one(sample: Item) -> None:
            row = await run.processor.process(sample, outcome.tally)
            if row["status"] == "pending":
                outcome.pending.append(_pending(sample, row["stage"], row["reason"]))
            else:
                outcome.decided += 1
                on_row(row)

        tasks = {asyncio.create_task(one(s)): s for s in samples} if not run.stopped else {}
        run.tasks.update(tasks)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        run.tasks.difference_update(tasks)
        for sample, result in zip(tasks.values(), results):
            if isinstance(result, EndpointError) and not run.stopped:
                run.stopped = result.reason
                atomic_write_bytes(stop_marker(outdir), result.reason.encode("utf-8"))
                for task in list(run.tasks):
                    task.cancel()
        for sample, result in zip(tasks.values(), results):
            if isinstance(result, BaseException) and not isinstance(result, (EndpointError, asyncio.CancelledError)):
                raise result  # a bug, not a sample's fate: let Prefect retry and report it
            if isinstance(result, (EndpointError, asyncio.CancelledError)):
                outcome.pending.append(_pending(sample, "run", run.stopped or "run stopped"))
        if run.stopped and not tasks:
            outcome.pending = [_pending(s, "run", run.stopped) for s in samples]
        outcome.stopped = run.stopped
        return outcome
    finally:
        await eng.release(run_id)


def _pending(sample: Item, stage: str, reason: str) -> dict[str, str]:
    return {"id": sample.id, "stage": stage, "reason": reason}
