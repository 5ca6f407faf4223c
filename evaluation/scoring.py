"""Scoring a model output against a benchmark item: the exact rule and each benchmark's official rule.

Two numbers per item, both reported (``evaluation.report``), with the items where they disagree:

``exact`` (every benchmark)
    Which option did the model choose? If its final answer (the last ``<answer>`` content, else the
    text after thinking) *equals* one option's text after normalisation (case, whitespace, outer
    punctuation and quotes), that option: an answer ``C major`` is the option ``C major``, never the
    letter C. Otherwise the shared parser ``filters.answers.parse_answer`` reads a letter. The choice
    is right when it is the gold option. An item whose published answer is not among its options
    (five rows of MMAR's May-2025 release) has no gold option: it is *unscorable* under this rule
    (``correct is None``), listed and counted, never guessed.

``letter`` (official for AVQA, Daily-Omni, OmniBench, manifest)
    The letter ``parse_answer`` reads must be the gold letter: what the benchmarks' own letter
    extractors do. An option text that starts with a capital and a space can be misread as a letter.
    (OmniBench's gold is taken by option index: its official parser mislabels some golds.)

``echoink`` (official for AVQA-R1-6K)
    EchoInk-R1's ``extract_choice`` (``src/omniInstruct-v1_eval_valid.py``): the letter of the first
    ``<answer>\s*([A-D])\s*</answer>``, case-insensitive; else the first standalone ``A``–``D``
    anywhere in the output, case-insensitive too (so the article "a" reads as A, as in their script);
    right when it is the gold letter. Only A–D, whatever the number of options.

``token_set`` (official for MMAR, MMAU)
    The MMAU/MMAR ``string_match``: every word of the gold answer text is in the prediction, and no
    word that only occurs in a wrong option is. The prediction is the text of the option the parser
    read, or the final answer text when it read none. It accepts a wrong option that shares all its
    words with the gold one ("From near to far" for "From far to near").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from filters.answers import LETTERS, ParsedAnswer, parse_answer, split_thinking
from filters.format import ANSWER_BLOCK

OFFICIAL_RULE = {"avqa": "letter", "omnibench": "letter", "dailyomni": "letter", "manifest": "letter",
                 "mmar": "token_set", "mmau": "token_set", "avqa-r1-6k": "echoink"}

RULE_DOC = {
    "exact": "the chosen option (an answer equal to an option's text is that option; else the parsed letter) "
             "is the gold option; items whose published answer is not an option are unscorable",
    "letter": "official letter rule: the parsed letter (filters.answers.parse_answer) equals the gold letter",
    "echoink": "official EchoInk-R1 rule: the letter in the first <answer>X</answer> with X in A-D, else the first "
               "standalone A-D (both case-insensitive), equals the gold letter",
    "token_set": "official MMAU/MMAR string_match of the chosen option's text (or the final answer text when "
                 "no letter is readable) against the published answer text",
}

_OUTER = " \t\r\n.,;:!?\"'`*_“”‘’()[]{}"


def final_answer_text(output: str) -> str:
    """The text a free-text matcher should see: the last non-empty ``<answer>`` content, else the
    text after thinking; empty when the thinking never closed."""
    _, final, closed = split_thinking(output or "")
    if not closed:
        return ""
    tags = [t for t in ANSWER_BLOCK.findall(final) if t.strip()]
    return (tags[-1] if tags else final).strip()


def normalise_option(text: str) -> str:
    """Case-folded, whitespace-collapsed, without outer punctuation, quotes or markdown emphasis."""
    return " ".join(str(text).split()).strip(_OUTER).casefold()


def option_by_text(answer: str, choices: Sequence[str]) -> str | None:
    """The letter of the one option whose text the whole ``answer`` equals (normalised), else None.

    A bare letter (``C``, ``(C)``) is not an option text here: letters are read as letters."""
    norm = normalise_option(answer)
    if not norm or re.fullmatch(r"[a-z]", norm):
        return None
    hits = [k for k, choice in enumerate(choices) if normalise_option(choice) == norm]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def choose_option(output: str, choices: Sequence[str]) -> ParsedAnswer:
    """The option the model chose under the exact rule (see the module doc)."""
    by_text = option_by_text(final_answer_text(output), choices)
    if by_text is not None:
        return ParsedAnswer(by_text, "the answer is an option's text")
    return parse_answer(output, choices)


_ECHOINK_TAG = re.compile(r"<answer>\s*([A-D])\s*</answer>", re.I)
_ECHOINK_BARE = re.compile(r"\b([A-D])\b", re.I)


def echoink_letter(output: str) -> str | None:
    """The letter EchoInk-R1's evaluation reads from an output (see the module doc); None where it reads "?"."""
    found = _ECHOINK_TAG.search(output or "") or _ECHOINK_BARE.search(output or "")
    return found.group(1).upper() if found else None


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", text.lower()))


def token_set_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The official MMAU/MMAR ``string_match`` (re-implemented from its definition)."""
    predicted, gold = _tokens(prediction), _tokens(answer)
    if not predicted:
        return False
    wrong: set[str] = set()
    for choice in choices:
        tokens = _tokens(choice)
        if tokens != gold:
            wrong |= tokens - gold
    return gold <= predicted and predicted.isdisjoint(wrong)


@dataclass(frozen=True)
class Scored:
    """One output scored both ways."""

    letter: str | None  # the option chosen under the exact rule (None: no readable answer)
    parse_reason: str
    correct: bool | None  # exact rule; None when the item is unscorable (no gold option)
    official_prediction: str  # what the official rule compared with the gold (a letter or a text)
    correct_official: bool


def score_output(output: str, choices: Sequence[str], gold_letter: str | None, gold_text: str,
                 official_rule: str) -> Scored:
    """Score ``output`` for an item with ``choices``; ``gold_letter`` is None when the published
    answer ``gold_text`` is not one of the options."""
    chosen = choose_option(output, choices)
    correct = None if gold_letter is None else chosen.letter == gold_letter
    parsed = parse_answer(output, choices)
    if official_rule == "letter":
        prediction, official = parsed.letter or "", gold_letter is not None and parsed.letter == gold_letter
    elif official_rule == "echoink":
        prediction = echoink_letter(output) or ""
        official = gold_letter is not None and prediction == gold_letter
    elif official_rule == "token_set":
        prediction = choices[LETTERS.index(parsed.letter)] if parsed.letter else final_answer_text(output)
        official = token_set_match(gold_text, prediction, choices)
    else:
        raise ValueError(f"unknown scoring rule {official_rule!r}")
    return Scored(chosen.letter, chosen.reason, correct, prediction, official)
