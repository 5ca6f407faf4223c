"""GRPO rewards (AVRT section 3.2): plain functions in TRL's reward signature.

``f(prompts, completions, completion_ids=None, **columns) -> list[float]``; ``completions`` are
strings or chat turns (``[{"role": "assistant", "content": …}]``), ``columns`` are the dataset
columns of the batch (``answer`` gold letter, ``choices`` option texts).

* ``format_reward``: 1 when the completion is exactly ``<think>…</think><answer>X</answer>``
  (``filters.format.check_format``, the checker the merger validation also uses), else 0.
* ``accuracy_reward``: 1 when ``filters.answers.parse_answer`` reads the gold letter, else 0.
  A truncated completion (thinking never closed) or an unreadable answer scores 0.
* ``length_reward`` (optional, off by default): a Gaussian bump on the number of words in the
  thinking, 1 inside ``[min_words, max_words]``, falling off with ``sigma`` outside.

The paper weighs format and accuracy 1:1 (``r = R_format + R_acc``).

Other recipes' rewards, as their code defines them (``configs/recipes/``, docs/recipes.md):

* ``echoink_format``: EchoInk-R1's format check, its regex verbatim: the stripped completion is
  ``<think>…</think>`` then ``<answer>…</answer>``; its look-aheads refuse a second ``<think>`` or
  ``<answer>`` only on the first line (no DOTALL), as theirs do.
* ``echoink_accuracy``: EchoInk-R1's exact match: the first ``<answer>`` content, stripped, equals
  the gold letter exactly (``C.`` is not ``C``).
* Omni-R1 (answers directly, accuracy only) uses ``accuracy``: the shared parser reads a bare letter
  (``B``, ``(B)``) and an option's text alike.

``REWARDS`` names every reward a config may weigh in ``grpo.rewards``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from filters.answers import parse_answer, split_thinking
from filters.format import check_format


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as chat turns."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence) and completion:
        return "".join(completion_text(turn) for turn in completion if isinstance(turn, dict)
                       and turn.get("role", "assistant") == "assistant")
    return ""


def _num_choices(choices: Any) -> int:
    return len(choices) if choices is not None and len(choices) > 0 else 4


def format_reward(prompts: list, completions: list, completion_ids: list | None = None,
                  choices: list | None = None, **_: Any) -> list[float]:
    """1.0 for a well-formed ``<think>…</think><answer>X</answer>``, else 0.0."""
    choices = choices if choices is not None else [None] * len(completions)
    return [float(check_format(completion_text(c), _num_choices(ch)).ok) for c, ch in zip(completions, choices)]


def accuracy_reward(prompts: list, completions: list, completion_ids: list | None = None,
                    answer: list | None = None, choices: list | None = None, **_: Any) -> list[float]:
    """1.0 when the parsed answer letter equals the gold ``answer`` letter, else 0.0."""
    if answer is None:
        raise ValueError("accuracy_reward needs the dataset column 'answer' (gold letter)")
    choices = choices if choices is not None else [None] * len(completions)
    rewards = []
    for completion, gold, options in zip(completions, answer, choices):
        options = list(options) if options is not None else None
        letter = parse_answer(completion_text(completion), options).letter
        rewards.append(float(letter is not None and letter == str(gold).strip().upper()))
    return rewards


def length_reward(prompts: list, completions: list, completion_ids: list | None = None,
                  min_words: int = 100, max_words: int = 200, sigma: float = 50.0, **_: Any) -> list[float]:
    """Gaussian preference for ``min_words``–``max_words`` words of thinking (1 inside, 0 if none)."""
    rewards = []
    for completion in completions:
        thinking, _final, _closed = split_thinking(completion_text(completion))
        words = len(thinking.split())
        if words == 0:
            rewards.append(0.0)
            continue
        gap = max(min_words - words, 0, words - max_words)
        rewards.append(math.exp(-0.5 * (gap / sigma) ** 2))
    return rewards


def make_length_reward(min_words: int = 100, max_words: int = 200, sigma: float = 50.0):
    """``length_reward`` with its bounds fixed, named for TRL's logs."""
    func = partial(length_reward, min_words=min_words, max_words=max_words, sigma=sigma)
    func.__name__ = "length_reward"  # type: ignore[attr-defined]
    return func


# EchoInk-R1's patterns (src/r1-v/src/open_r1/grpo.py), verbatim.
ECHOINK_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)
ECHOINK_FORMAT = re.compile(r"^(?!.*<think>.*<think>)(?!.*<answer>.*<answer>)"
                            r"<think>[\s\S]+?</think>\s*<answer>[\s\S]+?</answer>$")


def echoink_format_reward(prompts: list, completions: list, completion_ids: list | None = None,
                          **_: Any) -> list[float]:
    """1.0 when the stripped completion fully matches EchoInk-R1's format regex, else 0.0."""
    return [float(ECHOINK_FORMAT.fullmatch(completion_text(c).strip()) is not None) for c in completions]


def echoink_accuracy_reward(prompts: list, completions: list, completion_ids: list | None = None,
                            answer: list | None = None, **_: Any) -> list[float]:
    """1.0 when the first ``<answer>`` content (stripped) is exactly the gold letter, else 0.0."""
    if answer is None:
        raise ValueError("echoink_accuracy_reward needs the dataset column 'answer' (gold letter)")
    rewards = []
    for completion, gold in zip(completions, answer):
        found = ECHOINK_ANSWER.search(completion_text(completion))
        rewards.append(float(found is not None and found.group(1).strip() == str(gold).strip()))
    return rewards


# grpo.rewards names -> reward functions (``length`` is built from grpo.length_reward's bounds).
REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "length": length_reward,
    "echoink_format": echoink_format_reward,
    "echoink_accuracy": echoink_accuracy_reward,
}
