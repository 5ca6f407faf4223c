"""Chat requests for the teachers and the merger, in vLLM's OpenAI multimodal format.

Media parts are built as JSON bytes at once (``EncodedPart``): base64 needs no escaping, so the
request body (``dumps_body``) never re-scans the hundreds of kilobytes of a clip's frames and audio,
and copies them once.
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


class EncodedPart(bytes):
    """A message part already serialised as UTF-8 JSON; ``dumps_body`` inserts it as it is."""


def image_part(jpeg: bytes) -> EncodedPart:
    """``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,…"}}`` as JSON."""
    return EncodedPart(b"".join((b'{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,',
                                 base64.b64encode(jpeg), b'"}}')))


def audio_part(wav: bytes) -> EncodedPart:
    """``{"type": "input_audio", "input_audio": {"data": "…", "format": "wav"}}`` as JSON."""
    return EncodedPart(b"".join((b'{"type":"input_audio","input_audio":{"data":"', base64.b64encode(wav),
                                 b'","format":"wav"}}')))


def _text_part(text: str) -> list[dict[str, Any]]:
    """The text part, none for an empty text (a media_only request: the media alone)."""
    return [{"type": "text", "text": text}] if text else []


def vision_messages(text: str, frames: Sequence[bytes | EncodedPart]) -> list[dict[str, Any]]:
    """The frames as one image part each (Kimi-VL takes images, not video), then the text."""
    parts = [f if isinstance(f, EncodedPart) else image_part(f) for f in frames] + _text_part(text)
    return [{"role": "user", "content": parts}]


def audio_messages(text: str, wav: bytes | EncodedPart) -> list[dict[str, Any]]:
    """The WAV as one ``input_audio`` part, then the text (none for a captioner, which takes no text)."""
    parts = [wav if isinstance(wav, EncodedPart) else audio_part(wav), *_text_part(text)]
    return [{"role": "user", "content": parts}]


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def dumps_body(value: Any) -> bytes:
    """The request body as compact UTF-8 JSON (as the official client writes it), with every
    ``EncodedPart`` inserted verbatim; the media bytes are copied once."""
    pieces: list[bytes] = []
    _dump(value, pieces)
    return b"".join(pieces)


def _dump(value: Any, out: list[bytes]) -> None:
    if isinstance(value, EncodedPart):
        out.append(value)
    elif isinstance(value, dict):
        out.append(b"{")
        for i, (key, item) in enumerate(value.items()):
            out.append(b'%s%s:' % (b"," if i else b"", json.dumps(str(key), ensure_ascii=False).encode()))
            _dump(item, out)
        out.append(b"}")
    elif isinstance(value, (list, tuple)):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _dump(item, out)
        out.append(b"]")
    else:
        out.append(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
