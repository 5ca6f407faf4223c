"""Fill the paper's merger prompt (AVRT appendix A.2.3) for one sample.

Placeholders and what goes in them:

* ``{question}``: the question, stripped.
* ``{formatted_choices}``: `` Choose one among the following options:(A) … (B) … (C) … (D) …``:
  a leading space (the template writes ``{question}{formatted_choices}`` with nothing between),
  options separated by one space. This is exactly the text the teachers saw after their question
  (``filters.answers.question_text``), so the merger reads the question as the teachers did. The
  paper's example breaks lines before some options; that is an artefact of its PDF extraction.
* ``{correct_answer}``: the gold letter *and* its option text, ``(C) a dog``. The paper does not say
  which; the text lets the merger tie the evidence to the option's meaning, the letter is what it
  must write in ``<answer>``.
* ``{audio_reasoning}``, ``{vision_reasoning}``: the teachers' traces (``teachers.reasoning.trace_text``).

Substitution is one pass over the template (never ``str.format``), so braces in traces are kept and
text that itself looks like a placeholder (``{vision_reasoning}`` inside a trace) is never filled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from filters.answers import formatted_choices, option_letters

PLACEHOLDERS = ("question", "formatted_choices", "correct_answer", "audio_reasoning", "vision_reasoning")
REQUIRED = ("question", "audio_reasoning", "vision_reasoning")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def correct_answer(choices: Sequence[str], gold: str) -> str:
    """``(C) a dog``: the gold letter in brackets and its option text."""
    letters = option_letters(len(choices))
    gold = gold.strip().upper()
    if len(gold) != 1 or gold not in letters:
        raise ValueError(f"gold answer {gold!r} is not one of the {len(choices)} options {', '.join(letters)}")
    return f"({gold}) {str(choices[letters.index(gold)]).strip()}"


def render_merger_prompt(template: str, question: str, choices: list[str], gold: str,
                         audio_reasoning: str, vision_reasoning: str) -> str:
    """The merger's prompt: ``template`` with the five placeholders filled (see module doc).

    Raises ``ValueError`` when the template lacks ``{question}``, ``{audio_reasoning}`` or
    ``{vision_reasoning}``, or when ``gold`` is not one of the options."""
    missing = [name for name in REQUIRED if "{" + name + "}" not in template]
    if missing:
        raise ValueError(f"merger template lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
    values = {
        "question": question.strip(),
        "formatted_choices": formatted_choices(choices),
        "correct_answer": correct_answer(choices, gold),
        "audio_reasoning": (audio_reasoning or "").strip(),
        "vision_reasoning": (vision_reasoning or "").strip(),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
