"""build-questions' checks of a written question, as pure functions: each gives ``""`` (fine) or the reason
it is dropped, and the code (not the writer) places the correct answer among the options.

The writer answers ``{"questions": [{"question", "correct_answer", "distractors": [3 texts]}]}``
(``question_schema``, sent as the request's ``response_format``, which vLLM enforces). Rejection
reasons start with a fixed phrase (``corpus.stats.reason_kind`` counts by it) and end with details.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from filters.answers import LETTERS, ParsedAnswer

N_DISTRACTORS = 3
N_OPTIONS = N_DISTRACTORS + 1


@dataclass(frozen=True)
class Bounds:
    """Length bounds in words (Omni-R1 filtered by question + answer length; its threshold is not published)."""

    question_min: int = 4
    question_max: int = 40
    option_min: int = 1
    option_max: int = 20


CHARS_PER_WORD = 15  # a generous bound: the schema caps each text's characters at its word bound times this


def question_schema(n_questions: int = 1, bounds: Bounds | None = None) -> dict[str, Any]:
    """The JSON schema of the writer's answer: at most ``n_questions`` questions, each text at most
    ``CHARS_PER_WORD`` characters per word of its bound (guided decoding then cannot ramble; the word
    bounds themselves are checked by ``check_question``)."""
    bounds = bounds or Bounds()

    def text(max_words: int) -> dict[str, Any]:
        return {"type": "string", "maxLength": max_words * CHARS_PER_WORD}

    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array", "minItems": 1, "maxItems": n_questions,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": text(bounds.question_max),
                        "correct_answer": text(bounds.option_max),
                        "distractors": {"type": "array", "items": text(bounds.option_max),
                                        "minItems": N_DISTRACTORS, "maxItems": N_DISTRACTORS},
                    },
                    "required": ["question", "correct_answer", "distractors"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["questions"],
        "additionalProperties": False,
    }


# "all of the above", "none of these", "both A and B": options that refer to the other options
_META_OPTION = re.compile(r"\b(all|none|neither|both)\s+of\s+(the\s+)?(above|these|them|the\s+options)\b|\bboth\s+[a-d]\s+and\s+[a-d]\b",
                          re.IGNORECASE)


@dataclass(frozen=True)
class WrittenQuestion:
    question: str
    correct_answer: str
    distractors: tuple[str, ...]

    def options(self) -> list[str]:
        return [self.correct_answer, *self.distractors]


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``response_format`` asking for JSON that matches ``schema`` (vLLM's guided decoding)."""
    return {"type": "json_schema", "json_schema": {"name": "questions", "schema": schema, "strict": True}}


def parse_written(text: str, n_questions: int = 1, bounds: Bounds | None = None) -> tuple[list[WrittenQuestion], str]:
    """The writer's questions, or ``([], reason)`` when its answer is not ``question_schema(n_questions,
    bounds)``'s JSON."""
    try:
        data = json.loads(text, strict=False)  # control characters in strings: guided decoding lets them through
    except (ValueError, TypeError):
        shown = (text or "").strip().replace("\n", " ")
        return [], f"writer output is not JSON ({shown[:60]!r})"
    problem = _schema_problem(data, n_questions, bounds or Bounds())
    if problem:
        return [], f"writer output does not match the schema ({problem})"
    return [WrittenQuestion(q["question"].strip(), q["correct_answer"].strip(), tuple(d.strip() for d in q["distractors"]))
            for q in data["questions"]], ""


def _schema_problem(data: Any, n_questions: int, bounds: Bounds) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        return "no 'questions' list"
    if not 1 <= len(data["questions"]) <= n_questions:
        return f"{len(data['questions'])} questions, not 1 to {n_questions}"
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict):
            return f"questions[{i}] is not an object"
        for name in ("question", "correct_answer"):
            if not isinstance(q.get(name), str):
                return f"questions[{i}].{name} is not a text"
        distractors = q.get("distractors")
        if not isinstance(distractors, list) or not all(isinstance(d, str) for d in distractors):
            return f"questions[{i}].distractors is not a list of texts"
        if len(distractors) != N_DISTRACTORS:
            return f"questions[{i}] has {len(distractors)} distractors, not {N_DISTRACTORS}"
        limits = [(q["question"], bounds.question_max)] + [(o, bounds.option_max) for o in [q["correct_answer"], *distractors]]
        if any(len(t) > words * CHARS_PER_WORD for t, words in limits):
            return f"questions[{i}] holds a text longer than its maxLength"
    return ""


def normalise(text: str) -> str:
    """An option as compared with the others: lower case, no punctuation, no leading article, single spaces."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(words[1:] if words[:1] in (["a"], ["an"], ["the"]) else words)


def _words(text: str) -> int:
    return len(text.split())


def check_question(q: WrittenQuestion, bounds: Bounds = Bounds()) -> str:
    """``""`` when the question may be used, else why not (the first problem found)."""
    options = q.options()
    if any(not o.strip() for o in [q.question, *options]):
        return "empty question or option"
    normalised = [normalise(o) for o in options]
    if normalised.count(normalised[0]) > 1:
        return f"correct answer repeated among the distractors ({q.correct_answer!r})"
    if len(set(normalised)) < N_OPTIONS:
        return f"options not distinct after normalising ({'; '.join(options)})"
    meta = next((o for o in options if _META_OPTION.search(o)), None)
    if meta is not None:
        return f"option refers to the other options ({meta!r})"
    n = _words(q.question)
    if not bounds.question_min <= n <= bounds.question_max:
        return f"question length out of bounds ({n} words, {bounds.question_min} to {bounds.question_max})"
    n = next((n for n in map(_words, options) if not bounds.option_min <= n <= bounds.option_max), None)
    if n is not None:
        return f"option length out of bounds ({n} words, {bounds.option_min} to {bounds.option_max})"
    return ""


def answer_position(clip_id: str, index: int, seed: int = 0, n_options: int = N_OPTIONS) -> int:
    """Where the correct answer goes (0-based): drawn from a generator seeded by the clip's id, the
    question's index and ``seed``, so letters are balanced over clips and a re-run places it the same way."""
    digest = hashlib.sha256(f"{seed}|{clip_id}|{index}".encode()).digest()
    return random.Random(digest).randrange(n_options)


def place_answer(q: WrittenQuestion, clip_id: str, index: int, seed: int = 0) -> tuple[list[str], str]:
    """``(choices, answer letter)``: the distractors in the writer's order, the correct answer inserted at
    ``answer_position``."""
    position = answer_position(clip_id, index, seed)
    choices = list(q.distractors)
    choices.insert(position, q.correct_answer)
    return choices, LETTERS[position]


def blind_reason(parsed: ParsedAnswer, answer: str) -> str:
    """``""`` unless the blind solver (question text only) chose the answer: then the question is dropped."""
    if parsed.letter == answer:
        return f"answerable without the media (the blind solver chose {answer}, the answer)"
    return ""
