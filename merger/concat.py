"""A deterministic merger without an LLM: both teachers' traces, one after the other.

``concat_merge(vision_reasoning, audio_reasoning, gold)`` returns
``<think>Visual analysis: …\n\nAudio analysis: …</think><answer>X</answer>``. Before joining, each
trace loses everything that would break the format or state an answer: think and answer tags (an
``<answer>…</answer>`` block with its content), ``Answer: …`` lines, a trailing bare-letter line
(``C``, ``(C)``), and sentences that announce an answer ("the answer is …") or match
``merger.validate.LEAK_PATTERNS``. The result always passes ``validate_merged(…, gold)``.
"""

from __future__ import annotations

import re

from filters.format import ANSWER_BLOCK, TAG_ANY
from merger.validate import LEAK_PATTERNS

_ANSWER_LINE = re.compile(
    r"^[ \t>#*_`]*(?:final\s+|correct\s+|my\s+)?answer\b[^\n]{0,25}?[:：][^\n]*$\n?", re.IGNORECASE | re.MULTILINE
)
_LETTER_LINE = re.compile(r"^[\s*_`]*(?:[Oo]ption\s*)?[(\[{]?\s*[A-Z]\s*[)\]}]?[.:]?[\s*_`]*$")
_VERDICT = re.compile(
    r"\banswer\s+(?:is|would\s+be|must\s+be|should\s+be)\b"
    r"|\b(?:best|correct|right|final)\s+(?:option|choice)\s+(?:is|would\s+be)\b"
    r"|\bi\s*(?:would|will|'d|'ll)?\s*(?:choose|select|pick|go\s+with)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|$)")


def _clean_trace(text: str) -> str:
    text = ANSWER_BLOCK.sub(" ", text or "")
    text = TAG_ANY.sub(" ", text)
    text = _ANSWER_LINE.sub("", text)
    kept_lines = []
    for line in text.splitlines():
        sentences = [s for s in _SENTENCE.findall(line) if s.strip()]
        kept_lines.append("".join(s for s in sentences
                                  if not _VERDICT.search(s) and not any(p.search(s) for p in LEAK_PATTERNS)))
    text = "\n".join(kept_lines)
    for pattern in LEAK_PATTERNS:  # a phrase broken across lines: remove what is left of it
        text = pattern.sub(" ", text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    while lines and (not lines[-1] or _LETTER_LINE.match(lines[-1])):
        lines.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def concat_merge(vision_reasoning: str, audio_reasoning: str, gold: str) -> str:
    """``<think>Visual analysis: …\n\nAudio analysis: …</think><answer>gold</answer>``."""
    gold = (gold or "").strip().upper()
    if len(gold) != 1 or not gold.isalpha():
        raise ValueError(f"gold answer {gold!r} is not an option letter")
    vision = _clean_trace(vision_reasoning) or "(no visual analysis)"
    audio = _clean_trace(audio_reasoning) or "(no audio analysis)"
    return f"<think>Visual analysis: {vision}\n\nAudio analysis: {audio}</think><answer>{gold}</answer>"
