"""Chat requests for the teachers and the merger, in vLLM's OpenAI multimodal format."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from filters.answers import question_text


def teacher_prompt(prompt: str, question: str, choices: Sequence[str], suffix: str = "") -> str:
    """The teacher's prompt file, then the question (the prompts end with "input question:"), then
    an optional suffix (Audio Flamingo 3 enters think mode on a sentence after the question)."""
    text = f"{prompt}\n{question_text(question, choices)}"
    return f"{text} {suffix.strip()}" if suffix.strip() else text


def image_part(jpeg: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}}


def audio_part(wav: bytes) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}


def vision_messages(text: str, frames: Sequence[bytes]) -> list[dict[str, Any]]:
    """The frames as one image part each (Kimi-VL takes images, not video), then the text."""
    parts = [image_part(f) for f in frames] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def audio_messages(text: str, wav: bytes) -> list[dict[str, Any]]:
    """The WAV as one ``input_audio`` part, then the text."""
    parts = [audio_part(wav), {"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
