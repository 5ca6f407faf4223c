"""Separate a teacher's reasoning from its answer, wherever the server put the reasoning.

``split_reasoning(message)`` takes one chat message (an ``openai`` pydantic object, whose non-standard
fields live in ``model_extra``, or a plain dict) and returns ``(reasoning, answer_text)``, looking in
this order:

1. ``message.reasoning`` (vLLM ≥ 0.10 with a reasoning parser);
2. ``message.reasoning_content`` (older vLLM, ``transformers serve``);
3. a ``◁think▷…◁/think▷`` (Kimi-VL-Thinking) or ``<think>…</think>`` block inside the content
   (a close without an open also counts: the chat template opened it); the answer is what follows
   the last close. An *unclosed* block (truncated output) gives the text after the open tag as
   reasoning and the *whole* content as answer text, so ``parse_answer`` reports the truncation;
4. untagged reasoning (Audio Flamingo 3 think mode): the reasoning is the text before the last
   ``Answer: …`` line and the answer text is the whole content (``parse_answer`` then reads the
   last answer line); with no such line there is no separable reasoning (``""``).

``trace_text(reasoning, answer_text)`` is the teacher's full trace for the merger, without repeats.
``as_written(reasoning, raw)`` is a reply as the model wrote it, for the merger's ``<think>`` format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from filters.answers import split_thinking
from filters.format import THINK_TAG_ANY

_ANSWER_LINE = re.compile(
    r"^[ \t>#*_`]*(?:final\s+|correct\s+)?answer[*_`]*\s*(?:\([^()\n]{0,20}\))?\s*[:：]", re.IGNORECASE | re.MULTILINE
)


def _field(message: Any, name: str) -> Any:
    """A message field from a dict, a pydantic model's attribute, or its ``model_extra``."""
    if isinstance(message, Mapping):
        return message.get(name)
    value = getattr(message, name, None)
    if value is None:
        value = (getattr(message, "model_extra", None) or {}).get(name)
    return value


def _text(value: Any) -> str:
    """Content as text: a string, or a list of ``{"type": "text", "text": …}`` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text", "") if isinstance(p, Mapping) else str(getattr(p, "text", "") or "") for p in value]
        return "".join(parts)
    return str(value)


def split_reasoning(message: Mapping[str, Any] | Any) -> tuple[str, str]:
    """``(reasoning, answer_text)`` of one chat message, both stripped (see module doc)."""
    content = _text(_field(message, "content")).strip()
    if not content:
        content = _text(_field(message, "refusal")).strip()
    for name in ("reasoning", "reasoning_content"):
        reasoning = _text(_field(message, name)).strip()
        if reasoning:
            return reasoning, content
    if THINK_TAG_ANY.search(content):
        thinking, final, closed = split_thinking(content)
        return (thinking, final) if closed else (thinking, content)
    lines = list(_ANSWER_LINE.finditer(content))
    if lines:
        return content[: lines[-1].start()].strip(), content
    return "", content


def trace_text(reasoning: str, answer_text: str) -> str:
    """The teacher's whole trace: reasoning then answer text, without repeating the reasoning when
    the answer text already contains it (untagged reasoning) and without stray think tags."""
    reasoning, answer_text = (reasoning or "").strip(), (answer_text or "").strip()
    if not reasoning or reasoning in answer_text:
        trace = answer_text
    elif not answer_text or answer_text in reasoning:
        trace = reasoning
    else:
        trace = f"{reasoning}\n\n{answer_text}"
    return THINK_TAG_ANY.sub("", trace).strip()


def as_written(reasoning: str, raw: str) -> str:
    """The reply as the model wrote it: a reasoning field the server split off (a reasoning parser
    takes the ``<think>`` block out of the content) goes back in a ``<think>`` block before the
    content; a reply whose content already holds its reasoning is returned unchanged."""
    reasoning = (reasoning or "").strip()
    if not reasoning or reasoning in raw or THINK_TAG_ANY.search(raw):
        return raw
    return f"<think>\n{reasoning}\n</think>\n{raw.strip()}"
