"""Filter policies: which samples survive, and the reason written to the kept/rejected tables."""

from __future__ import annotations

import itertools

import pytest

from filters.answers import ParsedAnswer, parse_answer
from filters.policies import POLICIES, FilterDecision, apply_filter, is_right, judge_teacher

RIGHT, WRONG, NONE = "C", "B", None
EXPECTED_KEEP = {
    # (vision right?, audio right?) -> keep
    "both": {(1, 1): True, (1, 0): False, (0, 1): False, (0, 0): False},
    "vision": {(1, 1): True, (1, 0): True, (0, 1): False, (0, 0): False},
    "audio": {(1, 1): True, (1, 0): False, (0, 1): True, (0, 0): False},
    "either": {(1, 1): True, (1, 0): True, (0, 1): True, (0, 0): False},
    "all": {(1, 1): True, (1, 0): True, (0, 1): True, (0, 0): True},
}


def test_policies_are_the_documented_five():
    assert POLICIES == ("both", "vision", "audio", "either", "all")
    assert set(EXPECTED_KEEP) == set(POLICIES)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("vision_right", "audio_right"), list(itertools.product((1, 0), repeat=2)))
@pytest.mark.parametrize("wrong", [WRONG, NONE, ParsedAnswer(None, "empty output"), ParsedAnswer("A")])
def test_truth_table(policy, vision_right, audio_right, wrong):
    vision = ParsedAnswer(RIGHT) if vision_right else wrong
    audio = RIGHT if audio_right else wrong
    decision = apply_filter(policy, "C", vision, audio)
    assert isinstance(decision, FilterDecision)
    assert decision.keep is EXPECTED_KEEP[policy][(vision_right, audio_right)]
    assert decision.reason


def test_reasons_name_the_teacher_and_letters():
    assert apply_filter("both", "C", "B", "C").reason == "vision teacher wrong (said B, gold C)"
    assert apply_filter("both", "C", "C", "D").reason == "audio teacher wrong (said D, gold C)"
    assert apply_filter("both", "C", "C", "C") == FilterDecision(True, "both teachers right (C)")
    assert apply_filter("both", "c", "a", "b").reason == (
        "vision teacher wrong (said A, gold C); audio teacher wrong (said B, gold C)")


def test_reason_carries_why_a_teacher_gave_no_answer():
    audio = parse_answer("Answer: (A) or (B)", ["x", "y", "z", "w"])
    decision = apply_filter("both", "C", ParsedAnswer("C"), audio)
    assert not decision.keep
    assert decision.reason == "audio teacher gave no answer (ambiguous: names several options (A and B))"
    truncated = parse_answer("<think>still thinking", ["x", "y", "z", "w"])
    assert apply_filter("vision", "C", truncated, None).reason.startswith(
        "vision teacher gave no answer (truncated: thinking never closed")
    assert apply_filter("audio", "C", None, "C").reason == "audio teacher right (C)"
    assert apply_filter("audio", "C", "C", "").reason == "audio teacher gave no answer"


def test_single_modality_policies_ignore_the_other_teacher():
    assert apply_filter("vision", "C", "C", None) == FilterDecision(True, "vision teacher right (C)")
    assert apply_filter("audio", "C", None, "C").keep


def test_either_and_all_report_both_teachers():
    decision = apply_filter("either", "C", "B", ParsedAnswer(None, "empty output"))
    assert decision == FilterDecision(
        False, "vision teacher wrong (said B, gold C); audio teacher gave no answer (empty output)")
    assert apply_filter("all", "C", None, None).keep
    assert "policy 'all'" in apply_filter("all", "C", None, None).reason


def test_judge_teacher():
    assert judge_teacher("vision", "A", ParsedAnswer("A", "after 'Answer:'")) == (True, "vision teacher right (A)")


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="unknown filter policy 'majority'"):
        apply_filter("majority", "C", "C", "C")


@pytest.mark.parametrize("answer, right", [
    ("C", True), (" c ", True), (ParsedAnswer("C", "after 'Answer:'"), True), ("B", False),
    (None, False), ("", False), (float("nan"), False), (ParsedAnswer(None, "refused"), False),
])
def test_one_rule_for_a_right_teacher(answer, right):
    assert is_right("C", answer) is right
    assert judge_teacher("audio", "C", answer)[0] is right  # the filter's verdict is the same rule
