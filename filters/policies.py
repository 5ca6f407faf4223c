"""Which samples to keep, given what each teacher answered (the paper keeps those both got right).

Policies (``POLICIES``):

* ``both``   – keep when the vision *and* the audio teacher chose the gold option (the paper);
* ``vision`` – keep when the vision teacher was right (audio ignored);
* ``audio``  – keep when the audio teacher was right (vision ignored);
* ``either`` – keep when at least one teacher was right;
* ``all``    – keep every sample (no filtering; for ablations).

A teacher's answer may be a ``ParsedAnswer`` (its ``reason`` then explains a missing answer), a
letter, or None (no answer, reason unknown). The decision's ``reason`` is a sentence for the
rejected/kept tables, e.g. ``vision teacher wrong (said B, gold C)`` or
``audio teacher gave no answer (ambiguous: names several options (A and B))``.
"""

from __future__ import annotations

from dataclasses import dataclass

from filters.answers import ParsedAnswer

POLICIES = ("both", "vision", "audio", "either", "all")

TeacherAnswer = ParsedAnswer | str | None


@dataclass(frozen=True)
class FilterDecision:
    keep: bool
    reason: str


def _as_parsed(answer: TeacherAnswer | float) -> ParsedAnswer:
    if isinstance(answer, ParsedAnswer):
        return answer
    if answer is None or answer != answer or not str(answer).strip():  # None, NaN (a parquet gap) or blank
        return ParsedAnswer(None, "")
    return ParsedAnswer(str(answer).strip().upper())


def is_right(gold: str, answer: TeacherAnswer | float) -> bool:
    """The one rule for "this teacher chose the gold option" (filter, statistics, evaluation difficulty)."""
    letter = _as_parsed(answer).letter
    return letter is not None and letter == str(gold).strip().upper()


def judge_teacher(role: str, gold: str, answer: TeacherAnswer) -> tuple[bool, str]:
    """``(right, sentence)`` for one teacher: ``(False, "audio teacher wrong (said B, gold C)")``."""
    parsed = _as_parsed(answer)
    if parsed.letter is None:
        why = f" ({parsed.reason})" if parsed.reason else ""
        return False, f"{role} teacher gave no answer{why}"
    if is_right(gold, parsed):
        return True, f"{role} teacher right ({gold})"
    return False, f"{role} teacher wrong (said {parsed.letter}, gold {gold})"


def apply_filter(policy: str, gold: str, vision_answer: TeacherAnswer, audio_answer: TeacherAnswer) -> FilterDecision:
    """Keep or drop one sample under ``policy``; the reason names each teacher that matters."""
    if policy not in POLICIES:
        raise ValueError(f"unknown filter policy {policy!r}; choose one of {', '.join(POLICIES)}")
    gold = str(gold).strip().upper()
    vision_ok, vision_says = judge_teacher("vision", gold, vision_answer)
    audio_ok, audio_says = judge_teacher("audio", gold, audio_answer)
    if policy == "all":
        return FilterDecision(True, f"policy 'all' keeps every sample ({vision_says}; {audio_says})")
    if policy == "vision":
        return FilterDecision(vision_ok, vision_says)
    if policy == "audio":
        return FilterDecision(audio_ok, audio_says)
    if policy == "both":
        failed = [says for ok, says in ((vision_ok, vision_says), (audio_ok, audio_says)) if not ok]
        return FilterDecision(not failed, "; ".join(failed) if failed else f"both teachers right ({gold})")
    keep = vision_ok or audio_ok  # either
    return FilterDecision(keep, f"{vision_says}; {audio_says}")
