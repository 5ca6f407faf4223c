"""GRPO rewards: format and accuracy (paper 1:1), optional length reward, edge cases."""

from __future__ import annotations

import pytest

from training.rewards import (
    accuracy_reward,
    completion_text,
    format_reward,
    length_reward,
    make_length_reward,
)

CHOICES = ["a red screen", "a blue screen", "a green screen", "a yellow screen"]


@pytest.mark.parametrize("text, fmt, acc", [
    ("<think>I see red.</think><answer>A</answer>", 1.0, 1.0),
    ("  <think>I see red.</think>\n<answer> A </answer>\n", 1.0, 1.0),
    ("<think>I see blue.</think><answer>B</answer>", 1.0, 0.0),           # well formed, wrong
    ("<think>red</think>The answer is (A).", 0.0, 1.0),                    # right, no answer tag
    ("<think>red</think><answer>(A)</answer>", 0.0, 1.0),                  # letter in brackets
    ("<think></think><answer>A</answer>", 0.0, 1.0),                       # empty thinking
    ("<think>red<answer>A</answer>", 0.0, 0.0),                            # thinking never closed
    ("<think>red</think><answer>A</answer> extra", 0.0, 1.0),              # text after the answer
    ("<think>a</think><answer>A</answer><answer>B</answer>", 0.0, 0.0),    # two answers: last one counts
    ("<think>red</think><answer>E</answer>", 0.0, 0.0),                    # out of range
    ("", 0.0, 0.0),
    ("<|AUDIO|><|VIDEO|>", 0.0, 0.0),
])
def test_format_and_accuracy(text, fmt, acc):
    assert format_reward([None], [text], choices=[CHOICES]) == [fmt]
    assert accuracy_reward([None], [text], answer=["A"], choices=[CHOICES]) == [acc]


def test_chat_turn_completions_and_batches():
    completions = [[{"role": "assistant", "content": "<think>x</think><answer>C</answer>"}],
                   [{"role": "assistant", "content": "<think>x</think><answer>D</answer>"}]]
    assert completion_text(completions[0]) == "<think>x</think><answer>C</answer>"
    assert accuracy_reward([None, None], completions, answer=["C", "c"], choices=[CHOICES, CHOICES]) == [1.0, 0.0]
    assert format_reward([None, None], completions, choices=[CHOICES, CHOICES]) == [1.0, 1.0]


def test_accuracy_reads_option_text_and_needs_gold():
    assert accuracy_reward([None], ["<think>t</think>Answer: a green screen"], answer=["C"], choices=[CHOICES]) == [1.0]
    with pytest.raises(ValueError):
        accuracy_reward([None], ["<answer>A</answer>"], choices=[CHOICES])


def test_two_option_question_limits_letters():
    assert format_reward([None], ["<think>t</think><answer>C</answer>"], choices=[["yes", "no"]]) == [0.0]
    assert accuracy_reward([None], ["<think>t</think><answer>C</answer>"], answer=["C"], choices=[["yes", "no"]]) == [0.0]


def test_length_reward_gaussian():
    def trace(n):
        return "<think>" + "word " * n + "</think><answer>A</answer>"

    inside, short, long, none = length_reward([None] * 4, [trace(150), trace(50), trace(300), "<answer>A</answer>"])
    assert inside == 1.0 and none == 0.0
    assert short == pytest.approx(0.6065, abs=1e-3)  # one sigma (50 words) below 100
    assert 0 < long < short
    narrow = make_length_reward(min_words=10, max_words=20, sigma=5)
    assert narrow.__name__ == "length_reward"
    assert narrow([None], [trace(15)]) == [1.0] and narrow([None], [trace(150)])[0] < 1e-6
