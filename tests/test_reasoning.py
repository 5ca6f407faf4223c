"""Splitting a teacher's reasoning from its answer, for every place servers put the reasoning."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletion

from filters.answers import parse_answer
from teachers.reasoning import as_written, split_reasoning, trace_text

SOUNDS = ["dog barking", "cat meowing", "car horn", "rain falling"]
AF3 = ("Audio Description: Two loud honks over traffic noise.\n\n"
       "Reasoning: Honks are typical of a car horn; (A) no barking; (B) no meowing; (D) no rain.\n\n"
       "Answer: (C) car horn")


def _openai_message(**message):
    """A message exactly as the ``openai`` client parses a server's JSON reply."""
    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message}}]}
    return ChatCompletion.model_validate(reply).choices[0].message


@pytest.mark.parametrize("make", [dict, _openai_message], ids=["dict", "openai"])
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"content": "Answer: C", "reasoning": "Honks."}, ("Honks.", "Answer: C")),
        ({"content": "Answer: C", "reasoning_content": "Honks."}, ("Honks.", "Answer: C")),
        ({"content": "C", "reasoning": "new", "reasoning_content": "old"}, ("new", "C")),
        ({"content": "C", "reasoning": "", "reasoning_content": "old"}, ("old", "C")),
        ({"content": None, "reasoning_content": "cut off mid-"}, ("cut off mid-", "")),
        ({"content": "◁think▷I see a car.◁/think▷Answer: (C) car horn"}, ("I see a car.", "Answer: (C) car horn")),
        ({"content": "<think>\nI hear honks.\n</think>\n\n<answer>C</answer>"}, ("I hear honks.", "<answer>C</answer>")),
        ({"content": "I hear honks.</think>C"}, ("I hear honks.", "C")),
        ({"content": "<think>I hear hon"}, ("I hear hon", "<think>I hear hon")),
        ({"content": AF3}, (AF3[: AF3.index("Answer:")].strip(), AF3)),
        ({"content": "Reasoning: x.\n**Answer:** B\nAnswer: C"}, ("Reasoning: x.\n**Answer:** B", "Reasoning: x.\n**Answer:** B\nAnswer: C")),
        ({"content": "C"}, ("", "C")),
        ({"content": "  The car horn, so C.  "}, ("", "The car horn, so C.")),
        ({"content": None}, ("", "")),
        ({"content": None, "refusal": "I can't help with that."}, ("", "I can't help with that.")),
    ],
)
def test_split_reasoning(make, message, expected):
    assert split_reasoning(make(**message)) == expected


def test_content_as_text_parts():
    message = {"content": [{"type": "text", "text": "<think>a</think>"}, {"type": "text", "text": "B"}]}
    assert split_reasoning(message) == ("a", "B")


def test_object_with_plain_attributes():
    class Message:
        content = "Answer: D"
        reasoning_content = "rain on glass"

    assert split_reasoning(Message()) == ("rain on glass", "Answer: D")


def test_answer_text_is_what_the_parser_needs():
    for content, letter, reason in [
        (AF3, "C", None),
        ("◁think▷Maybe (A)? No.◁/think▷The answer is D.", "D", None),
        ("<think>(A) or (B)?", None, "truncated"),
    ]:
        _, answer_text = split_reasoning({"content": content})
        parsed = parse_answer(answer_text, SOUNDS)
        assert parsed.letter == letter
        assert reason is None or reason in parsed.reason


@pytest.mark.parametrize(
    ("reasoning", "answer_text", "trace"),
    [
        ("Honks.", "Answer: C", "Honks.\n\nAnswer: C"),
        ("", "Answer: C", "Answer: C"),
        ("Honks.", "", "Honks."),
        (AF3[: AF3.index("Answer:")].strip(), AF3, AF3),  # untagged: no repeat
        ("I hear hon", "<think>I hear hon", "I hear hon"),  # truncated: no stray tag
        ("  a  ", "  b  ", "a\n\nb"),
        ("", "", ""),
    ],
)
def test_trace_text(reasoning, answer_text, trace):
    assert trace_text(reasoning, answer_text) == trace


def test_trace_of_every_split_keeps_all_the_words():
    for content in [AF3, "◁think▷I see a car.◁/think▷Answer: (C) car horn", "<think>x y</think>C"]:
        trace = trace_text(*split_reasoning({"content": content}))
        stripped = content.replace("◁think▷", "").replace("◁/think▷", " ").replace("<think>", "").replace("</think>", " ")
        assert trace.split() == stripped.split()


@pytest.mark.parametrize("reasoning, raw, expected", [
    # a reasoning parser took the think block out of the content: it goes back in
    ("Both agree on B.", "<answer>B</answer>", "<think>\nBoth agree on B.\n</think>\n<answer>B</answer>"),
    # the content already holds it (no parser; a close tag only; untagged reasoning): unchanged
    ("Both agree.", "<think>Both agree.</think><answer>B</answer>", "<think>Both agree.</think><answer>B</answer>"),
    ("Both agree.", "Both agree.</think><answer>B</answer>", "Both agree.</think><answer>B</answer>"),
    ("The tone is high.", "The tone is high.\nAnswer: (B)", "The tone is high.\nAnswer: (B)"),
    ("", "<answer>B</answer>", "<answer>B</answer>"),
])
def test_a_reply_as_the_model_wrote_it(reasoning, raw, expected):
    assert as_written(reasoning, raw) == expected
