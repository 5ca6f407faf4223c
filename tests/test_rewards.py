"""GRPO rewards: format and accuracy (paper 1:1), optional length reward, the other recipes' rewards, edge cases."""

from __future__ import annotations

import pytest

from training.rewards import (
    REWARDS,
    accuracy_reward,
    completion_text,
    echoink_accuracy_reward,
    echoink_format_reward,
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


# EchoInk-R1's rewards, against its published definitions (src/r1-v/src/open_r1/grpo.py): exact match of
# the first <answer> content; a format regex whose duplicate-tag look-aheads see the first line only.
@pytest.mark.parametrize("text, fmt, acc", [
    ("<think>I see a dog.</think><answer>C</answer>", 1.0, 1.0),
    ("  <think>dog</think>\n\n<answer> C </answer>\n", 1.0, 1.0),         # stripped, spaces in the tag
    ("<think>dog</think><answer>C.</answer>", 1.0, 0.0),                   # "C." is not "C"
    ("<think>dog</think><answer>(C)</answer>", 1.0, 0.0),
    ("<think>dog</think><answer>c</answer>", 1.0, 0.0),                    # case matters
    ("<think>dog</think><answer>B</answer>", 1.0, 0.0),                    # well formed, wrong
    ("<think>one</think>\n<think>two</think><answer>C</answer>", 1.0, 1.0),  # a second <think> on a later line
    ("<think>one<think>two</think><answer>C</answer>", 0.0, 1.0),          # ... and on the first line
    ("<think>a</think><answer>C</answer><answer>B</answer>", 0.0, 1.0),     # the first answer counts
    ("<think>a</think><answer>C</answer> done", 0.0, 1.0),                 # text after the answer
    ("<answer>C</answer>", 0.0, 1.0),                                      # no thinking
    ("<think></think><answer>C</answer>", 0.0, 1.0),                       # empty thinking
    ("The answer is C.", 0.0, 0.0),
    ("", 0.0, 0.0),
])
def test_echoink_rewards(text, fmt, acc):
    assert echoink_format_reward([None], [text]) == [fmt]
    assert echoink_accuracy_reward([None], [text], answer=["C"]) == [acc]


# Omni-R1 answers directly and is rewarded when the response holds the correct answer: a letter or
# the option's text (the shared parser, `accuracy`).
@pytest.mark.parametrize("text, acc", [
    ("B", 1.0),
    ("(B)", 1.0),
    ("B.", 1.0),
    ("a blue screen", 1.0),                    # the option's text
    ("A blue screen.", 1.0),
    ("B) a blue screen", 1.0),
    ("The answer is a blue screen.", 1.0),
    ("The answer is B.", 1.0),
    ("C", 0.0),
    ("a green screen", 0.0),
    ("B or C", 0.0),                           # two options: no answer
    ("", 0.0),
])
def test_omni_r1_accuracy(text, acc):
    assert accuracy_reward([None], [text], answer=["B"], choices=[CHOICES]) == [acc]


def test_every_reward_has_a_name_configs_can_weigh():
    from training.train_config import load_config

    assert set(REWARDS) == {"format", "accuracy", "length", "echoink_format", "echoink_accuracy"}
    with pytest.raises(ValueError, match="unknown reward echoink_acc"):
        load_config(None, ["grpo.rewards={echoink_acc: 1}"])
    with pytest.raises(ValueError, match="every weight is 0"):
        load_config(None, ["grpo.rewards={accuracy: 0}"])
