"""The per-sample work of build-avrt: media -> teachers -> filter -> merger, with caching.

A sample ends as one *decided* row: ``status="kept"`` (a corpus row) or ``status="rejected"`` with
the ``stage`` that dropped it and a human-readable ``reason``. Only final verdicts are rows: unusable
media, a teacher's answer (right, wrong or unparseable), a merge still invalid after its attempts,
a request the server refused (4xx). A call that failed for transport reasons (timeouts, connection
errors, 429, 5xx after retries) leaves the sample ``status="pending"``: never written, retried by
the next run. An ``EndpointError`` (bad key, unknown model, endpoint down) is not about the sample:
it propagates and stops the run (``flows.execution``). Media and model calls are stored by content
(``media.store``, ``teachers.calls``), so a re-run repeats no finished work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from corpus.manifest import Sample
from corpus.schema import Row
from filters.answers import ParsedAnswer, parse_answer
from filters.policies import apply_filter
from flows.config import ROLES, BuildConfig, EndpointConfig, RunSettings, endpoint
from media import MediaError
from media.store import MediaStore
from merger.concat import concat_merge
from merger.prompt import render_merger_prompt
from merger.validate import validate_merged
from prompts import prompt_sha256
from teachers.calls import CallCache, cached_chat
from teachers.client import CallPending, ChatResult, EndpointError, ModelCallError, ModelClient
from teachers.reasoning import as_written, trace_text
from teachers.requests import (
    EncodedPart,
    audio_messages,
    audio_part,
    image_part,
    teacher_prompt,
    text_messages,
    vision_messages,
)

MESSAGE_LAYOUT = "v1"  # bump when the request layout changes, to invalidate cached calls


@dataclass
class Tally:
    """What one shard's samples cost: calls sent per role, cache hits/misses, wall seconds per stage."""

    calls: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)
    misses: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)

    def cache(self) -> dict[str, dict[str, int]]:
        return {n: {"hits": self.hits[n], "misses": self.misses[n]} for n in sorted(set(self.hits) | set(self.misses))}


class StageRunner:
    """What every flow's processor has: the media store, the call cache and one client per role; create
    inside the event loop that awaits it.

    One processor serves every shard of a run in a process (``flows.execution``), so its clients'
    per-replica bounds hold for the whole process; ``in_flight_share`` divides them (Dask workers).
    """

    def __init__(self, config: RunSettings, endpoints: dict[str, EndpointConfig], outdir: Path,
                 in_flight_share: int = 1):
        self.outdir = Path(outdir)
        root = config.cache_dir or self.outdir / "cache"
        self.media_store = MediaStore(root, self.outdir, config.media)
        self.calls = CallCache(root)
        self.prompts = {role: ep.prompt_text() for role, ep in endpoints.items()}
        self.clients = {role: ModelClient.from_endpoint(ep, max_in_flight=max(1, ep.max_in_flight // in_flight_share))
                        for role, ep in endpoints.items()}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()

    # -- media and calls: stored by content (media.store, teachers.calls) --------------------------
    async def media(self, sample: Sample, tally: Tally | None = None) -> dict[str, Any]:
        """The sample's frames and audio (extracted once per content); paths relative to outdir.
        A clip this process already resolved is recalled on the event loop; anything else (hashing,
        decoding, the cache folder) runs in a worker thread."""
        meta = self.media_store.recall(sample.video, sample.image, sample.audio)
        extracted = False
        if meta is None:
            meta, extracted = await asyncio.to_thread(self.media_store.get, sample.video, sample.image, sample.audio)
        if tally is not None:
            (tally.misses if extracted else tally.hits)["media"] += 1
        return meta

    async def call(self, role: str, key_parts: dict[str, Any], build_messages, tally: Tally,
                   extra_body: dict[str, Any] | None = None) -> ChatResult:
        """A cached call: the stored answer if any, else one request (its payload built once a slot is
        held); ``extra_body``: further request fields (e.g. ``response_format``), part of the key."""
        result, cached = await cached_chat(self.calls, self.clients[role], role,
                                           {"layout": MESSAGE_LAYOUT, **key_parts}, build_messages, extra_body)
        namespace = f"calls/{role}"
        if cached:
            tally.hits[namespace] += 1
        else:
            tally.misses[namespace] += 1
            tally.calls[role] += 1
        return result

    def media_request(self, modality: str, text: str, media: dict[str, Any]) -> tuple[list[str], Any]:
        """A request about a clip's frames (``vision``) or its audio (``audio``): the media's digests (part
        of the call's key) and the builder of its messages (the frames or the WAV, then ``text``)."""
        if modality == "vision":
            return media["frame_sha256"], lambda: vision_messages(
                text, [_encoded_frame(str(self.outdir / p)) for p in media["frames"]])
        return [media["audio_sha256"]], lambda: audio_messages(text, _encoded_audio(str(self.outdir / media["audio"])))


class SampleProcessor(StageRunner):
    """build-avrt's stages for one sample (``process``)."""

    def __init__(self, config: BuildConfig, outdir: Path, in_flight_share: int = 1):
        super().__init__(config, {role: endpoint(config, role) for role in ROLES}, outdir, in_flight_share)
        self.config = config

    async def ask_teacher(self, role: str, sample: Sample, media: dict[str, Any],
                          tally: Tally) -> tuple[ChatResult, ParsedAnswer]:
        prompt, ep = self.prompts[role], endpoint(self.config, role)
        text = "" if ep.media_only else teacher_prompt(prompt, sample.question, sample.choices, ep.question_suffix)
        media_ids, build = self.media_request(role, text, media)
        result = await self.call(role, {"text": text, "media": media_ids}, build, tally)
        parsed = parse_answer(result.content, sample.choices)
        if not parsed.ok and result.finish_reason == "length":
            parsed = ParsedAnswer(None, "truncated at max_tokens")
        return result, parsed

    async def merge(self, sample: Sample, vision: ChatResult, audio: ChatResult,
                    tally: Tally) -> tuple[str | None, str, int]:
        """Return ``(merged text or None, reason, attempts)``."""
        vision_trace = trace_text(vision.reasoning, vision.content)
        audio_trace = trace_text(audio.reasoning, audio.content)
        if self.config.merger_kind == "concat":
            merged = concat_merge(vision_trace, audio_trace, sample.answer)
            check = validate_merged(merged, sample.answer, len(sample.choices))
            return (check.cleaned if check.ok else None), check.reason, 0
        text = render_merger_prompt(self.prompts["merger"], sample.question, sample.choices, sample.answer,
                                    audio_trace, vision_trace)
        reasons = []
        for attempt in range(self.config.merger_attempts):
            result = await self.call("merger", {"text": text, "attempt": attempt}, lambda: text_messages(text), tally)
            check = validate_merged(as_written(result.reasoning, result.raw), sample.answer, len(sample.choices))
            if check.ok:
                return check.cleaned, "", attempt + 1
            reasons.append(check.reason)
        return None, f"merger output invalid after {self.config.merger_attempts} attempts ({'; '.join(dict.fromkeys(reasons))})", self.config.merger_attempts

    # -- one sample ------------------------------------------------------------------------------
    async def process(self, sample: Sample, tally: Tally | None = None) -> Row:
        """The sample's row: kept, rejected (a final verdict) or pending (transport failures).

        Raises ``EndpointError`` when an endpoint cannot serve anything (the run stops)."""
        tally = tally or Tally()
        row: dict[str, Any] = {"id": sample.id, "split": sample.split, "question": sample.question,
                               "choices": list(sample.choices), "answer": sample.answer,
                               "question_type": sample.question_type,
                               "source": sample.video or f"{sample.image} + {sample.audio}"}
        start = time.perf_counter()
        try:
            media = await self.media(sample, tally)
        except MediaError as err:
            return {**row, "status": "rejected", "stage": "media", "reason": err.reason}
        except OSError as err:  # the disk, not the sample: retried by the next run
            return {**row, "status": "pending", "stage": "media", "reason": f"media I/O error: {err.strerror or err}"}
        finally:
            tally.seconds["media"] += time.perf_counter() - start
        row.update(frames=media["frames"], frame_times=media["frame_times"], audio=media["audio"],
                   duration=media["duration"], resolution=f"{media['width']}x{media['height']}")

        start = time.perf_counter()
        outcomes = await asyncio.gather(self.ask_teacher("vision", sample, media, tally),
                                        self.ask_teacher("audio", sample, media, tally), return_exceptions=True)
        tally.seconds["teachers"] += time.perf_counter() - start
        for outcome in outcomes:  # run-level failures first, then transport failures, then verdicts
            if isinstance(outcome, BaseException) and not isinstance(outcome, ModelCallError) or \
                    isinstance(outcome, EndpointError):
                raise outcome
        parsed: dict[str, ParsedAnswer] = {}
        results: dict[str, ChatResult] = {}
        for role, outcome in zip(("vision", "audio"), outcomes):
            if isinstance(outcome, CallPending):
                return {**row, "status": "pending", "stage": f"{role}_teacher", "reason": f"{role} teacher: {outcome.reason}"}
        for role, outcome in zip(("vision", "audio"), outcomes):
            if isinstance(outcome, ModelCallError):
                row.update({f"{role}_answer": None})
                return {**row, "status": "rejected", "stage": f"{role}_teacher", "reason": f"{role} teacher call failed: {outcome.reason}"}
            results[role], parsed[role] = outcome
            row.update({f"{role}_raw": outcome[0].content, f"{role}_reasoning": outcome[0].reasoning,
                        f"{role}_answer": outcome[1].letter, f"{role}_parse": outcome[1].reason})

        decision = apply_filter(self.config.filter, sample.answer, parsed["vision"], parsed["audio"])
        if not decision.keep:
            return {**row, "status": "rejected", "stage": "filter", "reason": decision.reason}

        start = time.perf_counter()
        try:
            merged, reason, attempts = await self.merge(sample, results["vision"], results["audio"], tally)
        except CallPending as err:
            return {**row, "status": "pending", "stage": "merger", "reason": f"merger: {err.reason}"}
        except EndpointError:
            raise
        except ModelCallError as err:
            return {**row, "status": "rejected", "stage": "merger", "reason": f"merger call failed: {err.reason}"}
        finally:
            tally.seconds["merger"] += time.perf_counter() - start
        if merged is None:
            return {**row, "status": "rejected", "stage": "merger", "reason": reason}
        row.update(merged=merged, merger_kind=self.config.merger_kind, merger_attempts=attempts)
        row.update(self.provenance)
        return {**row, "status": "kept", "stage": "kept", "reason": ""}

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """Which models, prompts and sampling made a kept row (the same for every row of a run)."""
        out: dict[str, Any] = {}
        for role in ROLES:
            ep = endpoint(self.config, role)
            out[f"{role}_model"] = ep.model if (role != "merger" or self.config.merger_kind == "llm") else "concat"
            out[f"{role}_prompt_sha256"] = prompt_sha256(self.prompts[role])
            out[f"{role}_sampling"] = json.dumps(ep.sampling(), sort_keys=True)
        return out


# Media files live in content-addressed folders: a path's bytes never change, so a clip asked about
# many times (AVQA: several questions per video) is read and base64-encoded once per process.
@lru_cache(maxsize=1024)
def _encoded_frame(path: str) -> EncodedPart:
    return image_part(Path(path).read_bytes())


@lru_cache(maxsize=64)
def _encoded_audio(path: str) -> EncodedPart:
    return audio_part(Path(path).read_bytes())
