"""The per-clip work of build-questions: media -> captioners -> question writer -> checks -> blind solver.

A clip ends as one *decided* row, as a build-avrt sample does (``flows.stages``): ``status="kept"``
with its ``questions`` (each with its choices and the answer letter the code placed), or
``status="rejected"`` with the ``stage`` and ``reason`` (unusable media, an empty caption, a writer
answer that is not the schema's JSON, every question dropped). Dropped questions of any clip are in
``dropped_questions``, each with its stage (``checks`` or ``blind_solver``) and reason. A call that
failed for transport reasons leaves the clip ``pending`` (retried by the next run); an
``EndpointError`` stops the run. Every call is cached by its request (``teachers.calls``): a new writer
asks only the writer again.
"""

from __future__ import annotations

import asyncio
import json
from functools import cached_property
from pathlib import Path
from typing import Any

from corpus.clips import Clip
from filters.answers import parse_answer
from filters.questions import (
    blind_reason,
    check_question,
    parse_written,
    place_answer,
    question_schema,
    response_format,
)
from flows.questions_config import QuestionsConfig
from flows.stages import StageRunner, Tally
from media import MediaError
from prompts import prompt_sha256
from teachers.client import CallPending, ChatResult, EndpointError, ModelCallError
from teachers.requests import teacher_prompt, text_messages

STAGES = ("media", "audio_captioner", "vision_captioner", "question_writer", "checks", "blind_solver")


class _Stop(Exception):
    """A clip's verdict reached before its last stage (``status`` pending or rejected)."""

    def __init__(self, status: str, stage: str, reason: str):
        super().__init__(reason)
        self.status, self.stage, self.reason = status, stage, reason


def render_writer_prompt(prompt: str, captions: dict[str, str], n: int) -> str:
    return (prompt.replace("{audio_caption}", captions.get("audio", "").strip())
            .replace("{visual_caption}", captions.get("visual", "").strip()).replace("{n}", str(n)))


class ClipProcessor(StageRunner):
    """build-questions' stages for one clip (``process``); see the module doc."""

    def __init__(self, config: QuestionsConfig, outdir: Path, in_flight_share: int = 1):
        super().__init__(config, config.roles(), outdir, in_flight_share)
        self.config = config

    async def _call(self, role: str, key_parts: dict[str, Any], build, tally: Tally,
                    extra_body: dict[str, Any] | None = None) -> ChatResult:
        """``call``, with a failed call turned into the clip's verdict: pending (transport) or rejected."""
        try:
            return await self.call(role, key_parts, build, tally, extra_body)
        except EndpointError:
            raise
        except CallPending as err:
            raise _Stop("pending", role, f"{role}: {err.reason}") from None
        except ModelCallError as err:
            raise _Stop("rejected", role, f"{role} call failed: {err.reason}") from None

    async def _media(self, clip: Clip, tally: Tally) -> dict[str, Any]:
        try:
            return await self.media(clip, tally)
        except MediaError as err:
            raise _Stop("rejected", "media", err.reason) from None
        except OSError as err:  # the disk, not the clip: retried by the next run
            raise _Stop("pending", "media", f"media I/O error: {err.strerror or err}") from None

    async def caption(self, role: str, media: dict[str, Any], tally: Tally) -> str:
        ep, prompt = self.config.roles()[role], self.prompts[role]
        text = "" if ep.media_only else prompt
        if role == "vision_captioner" and not media["frames"]:
            raise _Stop("rejected", "media", "no frames for the vision captioner (an audio file)")
        ids, build = self.media_request("vision" if role == "vision_captioner" else "audio", text, media)
        result = await self._call(role, {"text": text, "media": ids}, build, tally)
        if not result.content.strip():
            raise _Stop("rejected", role, "empty caption" + (" (truncated at max_tokens)" if result.finish_reason == "length" else ""))
        return result.content.strip()

    async def captions(self, clip: Clip, row: dict[str, Any], tally: Tally) -> dict[str, str]:
        captions = {"audio": clip.caption} if clip.caption else {}
        roles = [r for r in ("audio_captioner", "vision_captioner") if r in self.config.roles()
                 and not (r == "audio_captioner" and captions)]
        if not roles:
            return captions
        media = await self._media(clip, tally)
        row.update(audio=media["audio"], frames=media["frames"], duration=media["duration"])
        said = await asyncio.gather(*(self.caption(r, media, tally) for r in roles), return_exceptions=True)
        failures = [o for o in said if isinstance(o, BaseException)]
        if failures:  # run-level failures first, then bugs, then pending (the clip is retried whole), then verdicts
            raise min(failures, key=lambda o: 0 if isinstance(o, EndpointError) else 1 if not isinstance(o, _Stop)
                      else 2 if o.status == "pending" else 3)
        captions.update({"audio" if r == "audio_captioner" else "visual": c for r, c in zip(roles, said)})
        return captions

    async def write(self, clip: Clip, captions: dict[str, str], tally: Tally) -> list[dict[str, Any]]:
        """The writer's questions, each checked and placed: ``{index, question, choices, answer, ...}``
        with ``stage`` and ``reason`` for a dropped one."""
        text = render_writer_prompt(self.prompts["question_writer"], captions, self.config.questions_per_clip)
        result = await self._call("question_writer", {"text": text}, lambda: text_messages(text), tally,
                                  {"response_format": response_format(question_schema(self.config.questions_per_clip,
                                                                                      self.config.bounds()))})
        written, problem = parse_written(result.content, self.config.questions_per_clip, self.config.bounds())
        if problem:
            truncated = " (truncated at max_tokens)" if result.finish_reason == "length" else ""
            raise _Stop("rejected", "question_writer", problem + truncated)
        out = []
        for index, q in enumerate(written):
            entry: dict[str, Any] = {"index": index, "question": q.question, "correct_answer": q.correct_answer,
                                     "distractors": list(q.distractors)}
            reason = check_question(q, self.config.bounds())
            if reason:
                out.append({**entry, "stage": "checks", "reason": reason})
                continue
            choices, letter = place_answer(q, clip.id, index, self.config.seed)
            out.append({**entry, "choices": choices, "answer": letter})
        return out

    async def blind(self, question: dict[str, Any], tally: Tally) -> dict[str, Any]:
        text = teacher_prompt(self.prompts["blind_solver"], question["question"], question["choices"])
        result = await self._call("blind_solver", {"text": text}, lambda: text_messages(text), tally)
        parsed = parse_answer(result.content, question["choices"])
        reason = blind_reason(parsed, question["answer"])
        return {**question, "blind_answer": parsed.letter, **({"stage": "blind_solver", "reason": reason} if reason else {})}

    async def process(self, clip: Clip, tally: Tally | None = None) -> dict[str, Any]:
        """The clip's row: kept, rejected (a final verdict) or pending (transport failures).

        Raises ``EndpointError`` when an endpoint cannot serve anything (the run stops)."""
        tally = tally or Tally()
        row: dict[str, Any] = {"id": clip.id, "split": clip.split, "video": clip.video, "source_audio": clip.audio}
        try:
            captions = await self.captions(clip, row, tally)
            row["captions"] = captions
            questions = await self.write(clip, captions, tally)
            if "blind_solver" in self.config.roles():
                asked = await asyncio.gather(*(self.blind(q, tally) for q in questions if "reason" not in q),
                                             return_exceptions=True)
                for outcome in asked:
                    if isinstance(outcome, BaseException):
                        raise outcome
                solved = iter(asked)
                questions = [q if "reason" in q else next(solved) for q in questions]
        except _Stop as stop:
            return {**row, "status": stop.status, "stage": stop.stage, "reason": stop.reason}
        kept = [q for q in questions if "reason" not in q]
        given = {"audio_captioner"} if clip.caption else set()  # a caption from --captions: no captioner made it
        row.update(questions=kept, dropped_questions=[q for q in questions if "reason" in q],
                   caption_source="--captions" if clip.caption else "audio_captioner",
                   **{k: {r: v for r, v in by_role.items() if r not in given} for k, by_role in self.provenance.items()})
        if kept:
            return {**row, "status": "kept", "stage": "kept", "reason": ""}
        last = row["dropped_questions"][-1]
        return {**row, "status": "rejected", "stage": last["stage"], "reason": f"every question dropped ({last['reason']})"}

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """Which models, prompts and sampling made a clip's questions (the same for every clip of a run)."""
        roles = self.config.roles()
        return {"models": {role: ep.model for role, ep in roles.items()},
                "prompt_sha256": {role: prompt_sha256(self.prompts[role]) for role in roles},
                "sampling": {role: json.dumps(ep.sampling(), sort_keys=True) for role, ep in roles.items()}}
