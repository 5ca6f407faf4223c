"""The target-format checker behind the format reward and merger validation."""

from __future__ import annotations

import pytest

from filters.format import FormatCheck, check_format

GOOD = [
    ("<think>The dog barks.</think><answer>C</answer>", "C"),
    ("  \n<think>x</think><answer>A</answer>", "A"),
    ("<think>multi\nline\nreasoning</think>\n<answer>B</answer>\n", "B"),
    ("<think> r </think>  <answer> D </answer>  ", "D"),
    ("<think>uses {braces} and <b>html</b></think><answer>A</answer>", "A"),
]


@pytest.mark.parametrize(("text", "letter"), GOOD)
def test_well_formed(text, letter):
    check = check_format(text)
    assert check == FormatCheck(True, [], check.think, letter)
    assert check.think and check.think == check.think.strip()


BAD = [
    ("", "empty output"),
    ("   \n ", "empty output"),
    ("The answer is C.", "no <think> tag"),
    ("<answer>C</answer>", "no <think> tag"),
    ("<think>reasoning that never ends", "no </think> tag"),
    ("<think>done</think>", "no <answer> tag"),
    ("<think>done</think><answer>C", "no </answer> tag"),
    ("<think></think><answer>C</answer>", "empty <think> block"),
    ("<think>  \n </think><answer>C</answer>", "empty <think> block"),
    ("Sure! <think>x</think><answer>C</answer>", "text before <think>: 'Sure!'"),
    ("<think>x</think>So C.<answer>C</answer>", "text between </think> and <answer>: 'So C.'"),
    ("<think>x</think><answer>C</answer> because dogs bark", "text after </answer>: 'because dogs bark'"),
    ("<think>x</think><answer>c</answer>", "answer 'c' is not a single letter among A, B, C, D"),
    ("<think>x</think><answer>(C)</answer>", "answer '(C)' is not a single letter among A, B, C, D"),
    ("<think>x</think><answer>E</answer>", "answer 'E' is not a single letter among A, B, C, D"),
    ("<think>x</think><answer>C) a dog</answer>", "answer 'C) a dog' is not a single letter among A, B, C, D"),
    ("<think>x</think><answer>AB</answer>", "answer 'AB' is not a single letter among A, B, C, D"),
    ("<think>x</think><answer></answer>", "answer '' is not a single letter among A, B, C, D"),
    ("<think>a<think>b</think><answer>C</answer>", "2 <think> tags (expected exactly one)"),
    ("<think>a</think><think>b</think><answer>C</answer>", "2 </think> tags (expected exactly one)"),
    ("<think>a</think><answer>C</answer><answer>D</answer>", "2 <answer> tags (expected exactly one)"),
    ("<think>x<answer>A</answer></think><answer>C</answer>", "2 <answer> tags (expected exactly one)"),
    ("<answer>C</answer><think>x</think>", "tags out of order (expected <think>…</think> then <answer>…</answer>)"),
    ("<THINK>x</THINK><ANSWER>C</ANSWER>", "no <think> tag"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_malformed_says_why(text, problem):
    check = check_format(text)
    assert not check.ok
    assert problem in check.problems, check.problems


def test_num_choices_widens_and_narrows_the_letters():
    text = "<think>x</think><answer>E</answer>"
    assert check_format(text, num_choices=5).ok
    assert check_format(text, num_choices=5).letter == "E"
    assert not check_format("<think>x</think><answer>C</answer>", num_choices=2).ok


def test_reads_parts_even_when_malformed():
    check = check_format("<think> looks fine </think><answer>B</answer> trailing")
    assert not check.ok
    assert (check.think, check.letter) == ("looks fine", "B")
    check = check_format("<answer>C</answer><think>x</think>")
    assert (check.think, check.letter) == ("x", "C")


def test_lists_every_problem():
    check = check_format("Hi <think></think>x<answer>z</answer>y")
    assert len(check.problems) == 5, check.problems


def test_long_snippets_are_shortened():
    check = check_format("<think>x</think><answer>C</answer>" + "tail " * 100)
    (problem,) = check.problems
    assert len(problem) < 80 and problem.endswith("…'")


@pytest.mark.timeout(60)  # a hang guard: a regex search over "<think>" * 20000 was quadratic (minutes)
def test_looping_rollouts_get_a_verdict():
    for looping in ["<think>" * 20000, "<think>x</think>" * 10000, "<think>x</think><answer>" * 10000,
                    "<answer>" * 20000, "<think>" + "a" * 200000 + "</think>" + "<answer>" * 5000 + "</answer>"]:
        check = check_format(looping)
        assert not check.ok and check.problems
