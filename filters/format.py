"""Is a completion in the student's target format ``<think>…</think><answer>X</answer>``?

One checker for the GRPO format reward, the merger validation and the corpus statistics.

Well formed means, exactly:

* optional whitespace, then one ``<think>`` block whose content is not blank;
* optional whitespace, then one ``<answer>X</answer>`` where ``X`` is one capital letter among the
  first ``num_choices`` (``A``–``D`` by default); whitespace around ``X`` inside the tag is tolerated,
  anything else (``c``, ``(C)``, ``C) a dog``) is not;
* nothing but whitespace after ``</answer>``.

Tags are case-sensitive (``<THINK>`` is not a tag). ``check_format`` lists *every* problem it finds
in words a human reads, so a rejected sample's row says what was wrong.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

# The student's format: exactly these tags.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
# The tags as models write them, for reading any text: <think>…</think> and Kimi-VL's ◁think▷…◁/think▷.
# The one set of these patterns in the project (parser, reasoning split, concat merger).
THINK_OPEN_ANY = re.compile(r"<think>|◁think▷", re.IGNORECASE)
THINK_CLOSE_ANY = re.compile(r"</think>|◁/think▷", re.IGNORECASE)
THINK_TAG_ANY = re.compile(r"</?think>|◁/?think▷", re.IGNORECASE)
TAG_ANY = re.compile(r"</?think>|◁/?think▷|</?answer>", re.IGNORECASE)
ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.IGNORECASE | re.DOTALL)  # unclosed: to the end


@dataclass
class FormatCheck:
    """``ok`` when well formed; otherwise ``problems`` says why. ``think`` (stripped) and ``letter``
    are filled in whenever they can be read, even if the text is not well formed."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    think: str = ""
    letter: str | None = None


def _snippet(text: str, limit: int = 40) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _valid_letter(content: str, num_choices: int) -> str | None:
    content = content.strip()
    if len(content) == 1 and content in string.ascii_uppercase[:num_choices]:
        return content
    return None


def check_format(text: str, num_choices: int = 4) -> FormatCheck:
    """Check ``text`` against the target format and list every problem found."""
    if text is None or not text.strip():
        return FormatCheck(False, ["empty output"])
    letters = string.ascii_uppercase[:num_choices]
    body = text.lstrip()
    problems: list[str] = []

    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        count = body.count(tag)
        if count == 0:
            problems.append(f"no {tag} tag")
        elif count > 1:
            problems.append(f"{count} {tag} tags (expected exactly one)")
    if THINK_OPEN in body and not body.startswith(THINK_OPEN):
        problems.append(f"text before <think>: {_snippet(body[: body.index(THINK_OPEN)])}")

    # Tags are located with str.find (linear): a regex search over a looping rollout such as
    # "<think>" * 20000 is quadratic and once took minutes.
    think, letter = "", None
    t_open = body.find(THINK_OPEN)
    t_close = body.find(THINK_CLOSE, t_open + len(THINK_OPEN)) if t_open >= 0 else -1
    a_open = body.find(ANSWER_OPEN, t_close + len(THINK_CLOSE)) if t_close >= 0 else -1
    a_close = body.find(ANSWER_CLOSE, a_open + len(ANSWER_OPEN)) if a_open >= 0 else -1
    if a_close >= 0:
        think = body[t_open + len(THINK_OPEN): t_close].strip()
        between = body[t_close + len(THINK_CLOSE): a_open]
        answer = body[a_open + len(ANSWER_OPEN): a_close]
        after = body[a_close + len(ANSWER_CLOSE):]
        if not think:
            problems.append("empty <think> block")
        if between.strip():
            problems.append(f"text between </think> and <answer>: {_snippet(between)}")
        letter = _valid_letter(answer, num_choices)
        if letter is None:
            problems.append(f"answer {_snippet(answer)} is not a single letter among {', '.join(letters)}")
        if after.strip():
            problems.append(f"text after </answer>: {_snippet(after)}")
    else:
        # Best effort for the report: read what can be read, then say the order is wrong.
        if t_close >= 0:
            think = body[t_open + len(THINK_OPEN): t_close].strip()
        last_close = body.rfind(ANSWER_CLOSE)
        last_open = body.rfind(ANSWER_OPEN, 0, last_close) if last_close >= 0 else -1
        if last_open >= 0:
            letter = _valid_letter(body[last_open + len(ANSWER_OPEN): last_close], num_choices)
        if all(tag in body for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
            problems.append("tags out of order (expected <think>…</think> then <answer>…</answer>)")
    return FormatCheck(not problems, problems, think, letter)
