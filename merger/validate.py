"""Is a merger output usable as a training trace?

``validate_merged(text, gold, num_choices)`` accepts it when, after cleaning (surrounding whitespace
and a leading ``Combined Analysis:`` header, which the merger sometimes repeats from its prompt,
removed), it is exactly ``<think>…</think><answer>X</answer>`` (``filters.format.check_format``:
nothing after ``</answer>``), ``X`` is the gold letter, and the thinking does not admit that the
answer was given (``LEAK_PATTERNS``: "the correct answer is", "I was told", "as stated", …,
case-insensitive). ``reason`` lists every problem, in words, for the rejected table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from filters.format import check_format

LEAK_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bcorrect\s+(?:answer|option|choice)\s+(?:is|was|would\s+be)\b",
        r"\b(?:i|we)\s+(?:was|were|have\s+been|had\s+been|am|are)\s+(?:told|informed)\b",
        r"\b(?:i|we)\s+(?:was|were|have\s+been|had\s+been|am|are)\s+(?:given|shown|provided)\s+(?:with\s+)?"
        r"(?:the\s+)?(?:correct\s+|right\s+)?(?:answer|solution)\b",
        r"\bthe\s+answer\s+(?:is\s+|was\s+)?(?:provided|given|supplied|stated|mentioned)\b",
        r"\b(?:provided|given|supplied|stated|known|expected|reference)\s+(?:correct\s+)?answer\b",
        r"\bas\s+stated\b",
        r"\b(?:i|we)\s+(?:already\s+)?(?:know|knew)\s+(?:that\s+)?the\s+(?:correct\s+|right\s+)?answer\b",
        r"\bgiven\s+that\s+the\s+(?:correct\s+|right\s+)?answer\b",
        r"\banswer\s+key\b",
        r"\b(?:matches|confirms?|confirming|consistent\s+with)\s+the\s+(?:correct|given|provided|right)\s+answer\b",
        r"\bas\s+(?:indicated|mentioned|noted|specified)\s+in\s+the\s+(?:question|prompt|instructions)\b",
    )
)
_HEADER = re.compile(r"\A[\s*#_]*combined\s+analysis[\s*_]*[:：]?[*_]*\s*", re.IGNORECASE)


@dataclass(frozen=True)
class MergeCheck:
    ok: bool
    reason: str  # "" when ok; otherwise every problem, separated by "; "
    cleaned: str  # the text to store: stripped, without a leading "Combined Analysis:" header


def clean_merged(text: str) -> str:
    """Strip surrounding whitespace and a leading ``Combined Analysis:`` header."""
    return _HEADER.sub("", (text or "").strip(), count=1).strip()


def find_leaks(think: str) -> list[str]:
    """The phrases in ``think`` that admit knowing the answer, as written."""
    return [m.group(0) for pattern in LEAK_PATTERNS for m in pattern.finditer(think)]


def validate_merged(text: str, gold: str, num_choices: int = 4) -> MergeCheck:
    """Check one merger output against the format, the gold letter and the leak patterns."""
    cleaned = clean_merged(text)
    check = check_format(cleaned, num_choices)
    problems = [f"format: {problem}" for problem in check.problems]
    gold = (gold or "").strip().upper()
    if check.letter is not None and check.letter != gold:
        problems.append(f"answer {check.letter} is not the gold {gold}")
    leaks = find_leaks(check.think)
    if leaks:
        problems.append("admits knowing the answer: " + ", ".join(repr(leak) for leak in dict.fromkeys(leaks)))
    return MergeCheck(not problems, "; ".join(problems), cleaned)
