"""Merger prompt rendering, merged-output validation and the no-LLM concat baseline."""

from __future__ import annotations

import pytest

from filters.answers import formatted_choices, question_text
from filters.format import check_format
from merger.concat import concat_merge
from merger.prompt import correct_answer, render_merger_prompt
from merger.validate import MergeCheck, clean_merged, find_leaks, validate_merged
from prompts import load_prompt
from teachers.reasoning import split_reasoning, trace_text

CHOICES = ["a dog", "a cat", "a car horn", "rain"]
QUESTION = "What makes the loudest sound?"
GOOD = "<think>The frames show a car and the audio has two honks, so the horn is loudest.</think><answer>C</answer>"


# -- prompt ---------------------------------------------------------------------------------------


def test_paper_template_is_filled_completely():
    template = load_prompt("merger")
    text = render_merger_prompt(template, QUESTION, CHOICES, "C", "Two honks.", "A red car.")
    assert ("Question: What makes the loudest sound? Choose one among the following options:"
            "(A) a dog (B) a cat (C) a car horn (D) rain\n") in text
    assert "Correct Answer: (C) a car horn\n" in text
    assert "Audio Analysis: Two honks.\n" in text
    assert "Visual Analysis: A red car.\n" in text
    assert text.endswith("Combined Analysis:")
    for name in ("question", "formatted_choices", "correct_answer", "audio_reasoning", "vision_reasoning"):
        assert "{" + name + "}" not in text


def test_choices_are_formatted_as_the_teachers_saw_them():
    assert QUESTION + formatted_choices(CHOICES) == question_text(QUESTION, CHOICES)


def test_braces_and_placeholder_lookalikes_in_traces_survive():
    template = "Q: {question}{formatted_choices}\nA: {audio_reasoning}\nV: {vision_reasoning}\nG: {correct_answer}"
    audio = 'JSON {"x": 1} and {vision_reasoning} and {0} and {'
    vision = "set {a, b} and {question}"
    text = render_merger_prompt(template, " Why {braces}? ", CHOICES, "b", audio, vision)
    assert text == ("Q: Why {braces}? Choose one among the following options:(A) a dog (B) a cat (C) a car horn (D) rain\n"
                    f"A: {audio}\nV: {vision}\nG: (B) a cat")


def test_bad_gold_or_template_is_an_error():
    with pytest.raises(ValueError, match="gold answer 'E'"):
        render_merger_prompt(load_prompt("merger"), QUESTION, CHOICES, "E", "a", "v")
    with pytest.raises(ValueError, match="vision_reasoning"):
        render_merger_prompt("{question} {audio_reasoning}", QUESTION, CHOICES, "C", "a", "v")
    assert correct_answer(["x", " y "], "b") == "(B) y"


# -- validate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        (GOOD, GOOD),
        ("\n  " + GOOD + "\n\n", GOOD),
        ("Combined Analysis:\n" + GOOD, GOOD),
        ("**Combined Analysis:** " + GOOD, GOOD),
        ("combined analysis\n\n" + GOOD, GOOD),
    ],
)
def test_valid_merges(text, cleaned):
    assert validate_merged(text, "C") == MergeCheck(True, "", cleaned)


@pytest.mark.parametrize(
    ("text", "gold", "reason"),
    [
        (GOOD, "B", "answer C is not the gold B"),
        (GOOD.replace("<answer>C", "<answer>c"), "C", "format: answer 'c' is not a single letter"),
        (GOOD + " The horn wins.", "C", "format: text after </answer>: 'The horn wins.'"),
        (GOOD.replace("<think>", ""), "C", "format: no <think> tag"),
        ("Sure, here it is. " + GOOD, "C", "format: text before <think>"),
        ("<think>Honks.</think>", "C", "format: no <answer> tag"),
        ("", "C", "format: empty output"),
        ("<think>The correct answer is C, so honks.</think><answer>C</answer>", "C",
         "admits knowing the answer: 'correct answer is'"),
    ],
)
def test_invalid_merges_say_why(text, gold, reason):
    check = validate_merged(text, gold)
    assert not check.ok
    assert reason in check.reason, check.reason


LEAKS = [
    "The correct answer is C because of the horn.",
    "I was told the answer, and the horn fits.",
    "We have been informed that it is a horn.",
    "I was given the correct answer beforehand.",
    "The answer provided is a car horn.",
    "The answer was given as C.",
    "As stated, the horn is loudest.",
    "We already know the answer is the horn.",
    "Given that the answer is C, the honks make sense.",
    "This matches the provided answer.",
    "The evidence is consistent with the correct answer.",
    "According to the answer key it is C.",
    "As indicated in the question, the horn is loudest.",
    "Checking against the given answer, C fits.",
]
INNOCENT = [
    "The frames show a car and the audio has two honks.",
    "We are shown eight frames of a street at night.",
    "We are given a short clip with traffic noise.",
    "To answer this, I compare what I hear with what I see.",
    "The dog was given a ball but stays silent.",
    "Given the honks, the answer must involve the car.",
    "Therefore the car horn is the loudest source.",
]


@pytest.mark.parametrize("sentence", LEAKS)
def test_leaks_are_caught(sentence):
    text = f"<think>Two honks are heard. {sentence.upper() if 'key' in sentence else sentence}</think><answer>C</answer>"
    check = validate_merged(text, "C")
    assert not check.ok and "admits knowing the answer" in check.reason, check.reason


@pytest.mark.parametrize("sentence", INNOCENT)
def test_ordinary_reasoning_is_not_a_leak(sentence):
    assert find_leaks(sentence) == []
    assert validate_merged(f"<think>{sentence}</think><answer>C</answer>", "C").ok


def test_leak_outside_the_think_is_a_format_problem_not_a_leak():
    check = validate_merged(GOOD + " The correct answer is C.", "C")
    assert "admits" not in check.reason and "text after </answer>" in check.reason


def test_all_problems_are_listed():
    check = validate_merged("<think>As stated, it is D.</think><answer>D</answer> ok", "C")
    assert check.reason.count("; ") == 2, check.reason


def test_clean_merged_only_strips_a_leading_header():
    assert clean_merged("  x Combined Analysis: y ") == "x Combined Analysis: y"


# -- concat ---------------------------------------------------------------------------------------

KIMI_RAW = {"content": "◁think▷The frames show a red car at a crossing. The correct answer is likely (C)."
                       "◁/think▷The car appears in all frames.\n\n**Answer: (C) a car horn**"}
AF3_RAW = {"content": "Audio Description: Two loud honks over traffic.\n\nReasoning: (A) no barking; (B) no "
                      "meowing; (D) no rain. The answer is C.\n\nAnswer: (C) a car horn"}
ODD_TRACES = [
    ("", ""),
    ("<think>x</think><answer>B</answer>", "Answer: B"),
    ("C", "(C)\n"),
    ("I was told it is C. As stated, honks. We already know the answer.", "Given that the answer is C, fine."),
    ("Uses <answer>D</answer> inline and </think> stray and <think> again.", "Final answer: D\nmore text"),
    ("Braces {x} and\n\n\n\nmany blank lines.", "I choose D. Honks are loud!"),
    ("as\nstated across lines", "correct answer\nis D"),
]


def _teacher_trace(raw):
    return trace_text(*split_reasoning(raw))


def test_concat_of_real_looking_traces():
    merged = concat_merge(_teacher_trace(KIMI_RAW), _teacher_trace(AF3_RAW), "C")
    assert merged.startswith("<think>Visual analysis: The frames show a red car at a crossing.")
    assert "\n\nAudio analysis: Audio Description: Two loud honks over traffic." in merged
    assert merged.endswith("</think><answer>C</answer>")
    for gone in ("Answer:", "correct answer", "The answer is C", "◁"):
        assert gone not in merged
    assert "The car appears in all frames." in merged and "(D) no rain." in merged
    assert validate_merged(merged, "C") == MergeCheck(True, "", merged)


@pytest.mark.parametrize(("vision", "audio"), ODD_TRACES)
@pytest.mark.parametrize("gold", ["A", "D"])
def test_concat_always_validates(vision, audio, gold):
    merged = concat_merge(vision, audio, gold)
    check = validate_merged(merged, gold)
    assert check.ok, (merged, check.reason)
    assert check_format(merged).letter == gold
    think = check_format(merged).think
    assert "Answer" not in think and "<" not in think.replace("(no ", "")


def test_concat_is_deterministic_and_rejects_bad_gold():
    assert concat_merge("v", "a", "b") == concat_merge("v", "a", "B") == (
        "<think>Visual analysis: v\n\nAudio analysis: a</think><answer>B</answer>")
    with pytest.raises(ValueError):
        concat_merge("v", "a", "")
