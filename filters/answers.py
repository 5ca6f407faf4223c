"""Which option did a model choose? One parser for teachers, rewards and evaluation.

``parse_answer(text, choices)`` reads the *final* answer after any thinking, in the forms models
really write: ``<answer>C</answer>``, ``Answer: (D) text``, ``Answer: D``, ``**Answer:** B``,
``### Final answer: b``, ``[C]``, ``The answer is (A).``, the option's own text without its letter,
or a bare letter on the last line. It returns no answer (``letter=None`` with a ``reason``) for
empty, truncated (thinking never closed), refused, out-of-range or ambiguous (``(A) or (B)``)
outputs. A capital letter used as an article ("A dog barks") is not an answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

LETTERS = string.ascii_uppercase

_THINK_CLOSE = re.compile(r"</think>|◁/think▷", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>|◁think▷", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_MARKER = re.compile(
    r"(?:final\s+answer|correct\s+(?:answer|option|choice)|best\s+(?:answer|option|choice)|"
    r"answer\s+is|option\s+is|choice\s+is|answer|i\s+(?:would\s+)?(?:choose|select|pick)|"
    r"i\s+will\s+(?:choose|select|pick))"
    r"\s*(?:is|would\s+be|:|：|-|=)?\s*(?:option|choice)?\s*:?",
    re.IGNORECASE,
)
_MARKDOWN = re.compile(r"[*_`#>]+")
_BRACKETED = re.compile(r"[(\[{]\s*([A-Za-z])\s*[)\]}]")
_LEADING_LETTER = re.compile(r"^\s*(?:option|choice)?\s*[(\[{]?\s*([A-Za-z])\s*(?:[)\]}.:：,]|$)", re.IGNORECASE)
_BARE_LETTER_THEN_TEXT = re.compile(r"^\s*([A-Z])\s+(\S.*)$", re.DOTALL)
_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can not|unable to|not possible to)\s+(?:be\s+)?(?:determine|answer|tell|decide|know)|"
    r"\bnone of the (?:options|choices|above)\b|\binsufficient information\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedAnswer:
    """``letter`` is the chosen option (``"A"``...), or None with ``reason`` saying why not."""

    letter: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.letter is not None


def option_letters(n: int) -> str:
    return LETTERS[:n]


def format_choices(choices: Sequence[str]) -> str:
    """``(A) first (B) second ...``: the paper's option format."""
    return " ".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices))


def split_thinking(text: str) -> tuple[str, str, bool]:
    """Return ``(thinking, final_text, closed)``; ``closed`` is False for an unterminated think."""
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        last = closes[-1]
        thinking = _THINK_OPEN.sub("", text[: last.start()], count=1).strip()
        return thinking, text[last.end():].strip(), True
    opened = _THINK_OPEN.search(text)
    if opened:
        return text[opened.end():].strip(), "", False
    return "", text.strip(), True


def parse_answer(text: str | None, choices: Sequence[str] | None = None, num_choices: int | None = None) -> ParsedAnswer:
    """Parse the option a model chose. ``choices`` (option texts) enable text matching."""
    n = len(choices) if choices else (num_choices or 4)
    valid = option_letters(n)
    if text is None or not text.strip():
        return ParsedAnswer(None, "empty output")
    _, final, closed = split_thinking(text)
    if not closed:
        return ParsedAnswer(None, "truncated: thinking never closed")
    if not final:
        return ParsedAnswer(None, "no answer after thinking")
    tags = _ANSWER_TAG.findall(final)
    if tags:
        return _parse_segment(tags[-1], choices, valid, strict=False) or ParsedAnswer(None, f"unreadable <answer> tag: {tags[-1].strip()[:40]!r}")
    markers = list(_MARKER.finditer(final))
    for marker in reversed(markers):
        segment = _first_clause(final[marker.end():])
        parsed = _parse_segment(segment, choices, valid, strict=False)
        if parsed is not None:
            return parsed
    lines = [line for line in final.splitlines() if line.strip()]
    candidates = [lines[-1]] + ([lines[0]] if len(lines) > 1 else [])
    for line in candidates:
        parsed = _parse_segment(line, choices, valid, strict=True)
        if parsed is not None:
            return parsed
    if _REFUSAL.search(final):
        return ParsedAnswer(None, "refused or undecided")
    return ParsedAnswer(None, "no answer found")


def parse_choice(text: str | None, choices: Sequence[str] | None = None, num_choices: int | None = None) -> str | None:
    """The chosen letter or None (see ``parse_answer`` for the reason)."""
    return parse_answer(text, choices, num_choices).letter


def _first_clause(text: str) -> str:
    """The answer segment after a marker: up to the first blank line (markdown stripped)."""
    text = _MARKDOWN.sub("", text).strip()
    return re.split(r"\n\s*\n", text, maxsplit=1)[0].strip()


def _normalise(text: str) -> str:
    text = _MARKDOWN.sub("", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _parse_segment(segment: str, choices: Sequence[str] | None, valid: str, strict: bool) -> ParsedAnswer | None:
    """A letter from one answer segment, or ParsedAnswer(None, reason) if it is decidedly bad, or
    None when the segment holds no answer at all (so the caller may look elsewhere)."""
    segment = _MARKDOWN.sub("", segment).strip()
    if not segment:
        return None
    bracketed = {m.upper() for m in _BRACKETED.findall(segment)}
    if len(bracketed) > 1:
        return ParsedAnswer(None, f"ambiguous: several options named ({', '.join(sorted(bracketed))})")
    found = _LEADING_LETTER.match(segment)
    letter = found.group(1) if found else None
    if letter is not None and not letter.isupper():
        # A lower-case letter counts only when clearly marked: "(d)", "d)", "d." or alone.
        rest = segment[found.end():].strip()
        if found.group(0).strip() in (letter,) and rest and not strict:
            letter = None  # "a dog ..." after a marker is an article, not an option
    if letter is None:
        bare = _BARE_LETTER_THEN_TEXT.match(segment)
        if bare and choices and bare.group(1) in valid:
            index = valid.index(bare.group(1))
            if _normalise(bare.group(2)).startswith(_normalise(choices[index])):
                letter = bare.group(1)
    if letter is not None:
        letter = letter.upper()
        if letter not in valid:
            return ParsedAnswer(None, f"out of range: option {letter} of {len(valid)}")
        if strict and found is None and choices is None:
            return None
        return ParsedAnswer(letter)
    if choices:
        return _match_option_text(segment, choices, valid, strict)
    return None


def _match_option_text(segment: str, choices: Sequence[str], valid: str, strict: bool) -> ParsedAnswer | None:
    said = _normalise(segment)
    if not said:
        return None
    texts = [_normalise(c) for c in choices]
    if strict:
        hits = [i for i, t in enumerate(texts) if t and said.rstrip(" .") == t]
    else:
        hits = [i for i, t in enumerate(texts) if t and re.search(rf"\b{re.escape(t)}\b", said)]
        hits = [i for i in hits if not any(j != i and texts[i] in texts[j] for j in hits)]
    if len(hits) == 1:
        return ParsedAnswer(valid[hits[0]])
    if len(hits) > 1:
        return ParsedAnswer(None, "ambiguous: several option texts named")
    return None
