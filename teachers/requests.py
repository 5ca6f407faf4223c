"""Chat requests for the teachers and the merger, in vLLM's OpenAI multimodal format.

Media parts are built as JSON text at once (``EncodedPart``): base64 needs no escaping, so the
request body (``dumps_body``) never re-scans the hundreds of kilobytes of a clip's frames and audio.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from filters.answers import question_text


def teacher_prompt(prompt: str, question: str, choices: Sequence[str], suffix: str = "") -> str:
    """The teacher's prompt file, then the question (the prompts end with "input question:"), then
    an optional suffix (Audio Flamingo 3 enters think mode on a sentence after the question)."""
    text = f"{prompt}\n{question_text(question, choices)}"
    return f"{text} {suffix.strip()}" if suffix.strip() else text


class EncodedPart(str):
    """A message part already serialised as JSON; ``dumps_body`` inserts it as it is."""


def image_part(jpeg: bytes) -> EncodedPart:
    """``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,…"}}`` as JSON."""
    return EncodedPart('{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,'
                       + base64.b64encode(jpeg).decode("ascii") + '"}}')


def audio_part(wav: bytes) -> EncodedPart:
    """``{"type": "input_audio", "input_audio": {"data": "…", "format": "wav"}}`` as JSON."""
    return EncodedPart('{"type":"input_audio","input_audio":{"data":"' + base64.b64encode(wav).decode("ascii")
                       + '","format":"wav"}}')


def vision_messages(text: str, frames: Sequence[bytes | EncodedPart]) -> list[dict[str, Any]]:
    """The frames as one image part each (Kimi-VL takes images, not video), then the text."""
    parts = [f if isinstance(f, EncodedPart) else image_part(f) for f in frames] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def audio_messages(text: str, wav: bytes | EncodedPart) -> list[dict[str, Any]]:
    """The WAV as one ``input_audio`` part, then the text."""
    parts = [wav if isinstance(wav, EncodedPart) else audio_part(wav), {"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def dumps_body(value: Any) -> bytes:
    """The request body as compact UTF-8 JSON (as the official client writes it), with every
    ``EncodedPart`` inserted verbatim."""
    return _dump(value).encode("utf-8")


def _dump(value: Any) -> str:
    if isinstance(value, EncodedPart):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
