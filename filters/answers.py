"""Which option did a model choose? One parser for teachers, rewards and evaluation.

``parse_answer(text, choices)`` reads the *final* answer, after any thinking (``<think>…</think>``
or Kimi's ``◁think▷…◁/think▷``), in the forms models really write, in this order:

1. an ``<answer>…</answer>`` tag, else a ``\\boxed{…}`` (the last non-empty one; braces matched and
   LaTeX unwrapped, so ``\\boxed{\\text{(B) 25\\%}}`` is B). A box that names no option
   (``\\boxed{x^2}``) falls through to the statements; an answer statement *after* a box that names
   a different option wins (the model's last word);
2. the last *statement* of an answer: a marker and what follows it (``Answer: (D) text``,
   ``**Answer:** B``, ``### Final answer: b``, ``The correct answer is [C]``, ``I choose C``,
   ``I'll go with option D``, ``答案：选项 C``, ``Answer: I believe it's C``) or a verdict after a letter
   (``Option C is correct``, ``(C) is the best``, ``so B is the answer``). The last one wins, so
   options discussed in the reasoning do not count;
3. a line holding only the answer (the last line, else the first): ``C``, ``(C)``, ``C.``,
   ``Option C``, ``选项 (C)``, ``{C}``, ``C) a dog`` or the option's own text ``a dog``;
4. an option named alone: a text that *begins* with a bracketed letter (``(B) 3.3 MeV``,
   ``Option (B) fits the sound``, ``选项 (B) …``) and names no other option anywhere (no other
   letter in brackets or after ``Option``, no other option's text).

After a marker the letter may be followed by an explanation (``Answer: C, because…``); the option's
text is matched case-insensitively, the longest option first (``hot dog`` is not ``dog``); a letter
beats a contradicting option text. An option text that does not *start* the answer (``the answer is
the sound of a car horn``) is a weak reading, used only when no statement gives a strong one.
Without a marker, a line holding nothing but the answer counts, or an option named alone at the very
start; so a truncated evaluation (``Reasoning: (A) is dark; (B) Documentary narration usually …``) is
not read as an answer.

No answer (``letter=None``, ``reason`` in plain words for the rejected table) for: empty output,
thinking that never closed (truncated), nothing after thinking, refusals (``none of the above``,
``N/A``), a letter outside the options (``E`` of four), several options (``(A) or (B)``, ``both B
and C``), and a capital used as an article (``A dog barks.``). On success ``reason`` says where the
answer was read (``after 'Answer:'``, ``from the <answer> tag``, ``on the last line``).
Cost stays linear on looping outputs: only the last 64 statements and 1000 characters after each
marker are read.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from filters.format import ANSWER_BLOCK, THINK_CLOSE_ANY, THINK_OPEN_ANY

LETTERS = string.ascii_uppercase

_EMPHASIS = re.compile(r"\*+|`+|(?<!\w)__+|__+(?!\w)")  # "**Answer**: B" reads as "Answer: B"
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>")

_BE = r"(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be|has\s+to\s+be|seems\s+to\s+be)"
_MARKER = re.compile(
    r"(?:"
    rf"\banswer\b\s*(?:{_BE}\b\s*[:：]?|[:：=]|[-–—](?=\s)|\n)"  # "Answer:", "the answer is"
    r"|\banswer\s*\([^()\n]{0,20}\)\s*[:：]"  # "Answer (letter only): C"
    rf"|\b(?:option|choice|(?:best|closest)\s+match)\s+{_BE}\b\s*[:：]?"  # "the best option is", "my choice would be"
    r"|\b(?:best|correct|right|final|my)\s+(?:option|choice)\s*[:：=]"  # "Best option: C"
    r"|\bi\s*(?:would|will|'d|'ll|’d|’ll)?\s*(?:choose|select|pick|go\s+with)\b"
    r"|\b(?:let'?s|let\s+us|i\s+am\s+going\s+to)\s+(?:choose|select|pick|go\s+with)\b"
    r"|答案\s*(?:是|为|為)?\s*[:：]?"
    r")",
    re.IGNORECASE,
)
_STRIP_LEAD = " \t\r\n*_`'\"“”‘’>:：-–—"
_MARKDOWN = re.compile(r"\*+|`+|^\s*#+\s*|^\s*>+\s*|(?<!\w)__|__(?!\w)", re.MULTILINE)
_HEAD = re.compile(
    r"^(?P<option>(?:the\s+)?(?:option|choice|选项)\s*)?"
    r"(?P<open>[(\[{])?\s*(?P<letter>[A-Za-z])(?![A-Za-z0-9]|['’][A-Za-z])\s*(?P<close>[)\]}])?",
    re.IGNORECASE,
)
_CONNECTOR = re.compile(
    r"^\s*(?:,|/|&|\+|;|\bor\b|\band\b|\bvs\.?|\bversus\b)\s*(?:option\s*|choice\s*|选项\s*)?"
    r"(?P<open>[(\[{])?\s*(?P<letter>[A-Za-z])(?![A-Za-z0-9]|['’][A-Za-z])",
    re.IGNORECASE,
)
_LATER_ALTERNATIVE = re.compile(r"\b(?:or|and)\s+(?:option\s+|choice\s+)?[(\[{]([A-Za-z])[)\]}]", re.IGNORECASE)
_HEDGE = re.compile(r"^(?:both|either|neither)\b", re.IGNORECASE)
_BRACKETED = re.compile(r"[(\[{]\s*([A-Za-z])\s*[)\]}]")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can’t|can\s+not|unable\s+to|not\s+possible\s+to|impossible\s+to)\s+(?:be\s+)?"
    r"(?:determine|answer|tell|decide|know|say|identify|help|assist|choose)"
    r"|\bnone\s+of\s+the\s+(?:options|choices|above|given)\b|\binsufficient\s+information\b"
    r"|\bnot\s+enough\s+information\b|\bi\s*(?:do\s+not|don't|don’t)\s+know\b|\bi'?m\s+sorry\b"
    r"|\bi\s+am\s+sorry\b|\bas\s+an\s+ai\b"
    r"|(?:^|[:：]\s*)(?:none|n/a|unknown|unclear|undetermined|uncertain)\W*$",
    re.IGNORECASE | re.MULTILINE,
)
_NOT_AN_ANSWER = re.compile(r"^(?:n/a|none|unknown|unclear)\b", re.IGNORECASE)
_FILLER = re.compile(
    r"^(?:(?:i\s+(?:believe|think|guess|would\s+say)(?:\s+that)?|probably|likely|most\s+likely|definitely|"
    r"clearly|certainly|it'?s|it’s|it\s+is|that\s+is|this\s+is|it\s+(?:must|should|would)\s+be)\b\s*[,:]?\s*)+",
    re.IGNORECASE,
)
_MAX_STATEMENTS = 64  # only the last answer statements are read (a looping output has thousands)
_HEAD_WINDOW = 1000  # characters read after a marker: answers are short, and looping outputs long
_BOX_OPEN = re.compile(r"\\boxed\s*\{")
# LaTeX a model wraps a boxed letter in: ``\text{(B) 25\%}``, ``\textbf{C}``, ``\mathrm{C}``.
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|emph|fbox)\s*\{([^{}]*)\}")
_LATEX_ESCAPE = re.compile(r"\\([%&$#_{} ])")
# "Option C is correct", "(C) is the best", "so B is the answer": a verdict after the letter.
_VERDICT_AFTER = re.compile(
    r"(?:^|[\n.,;:!?]|\b(?:so|thus|hence|then|therefore|overall|clearly))\s*"
    r"(?P<option>(?:option|choice)\s*)?(?P<open>[(\[{])?\s*(?P<letter>[A-Za-z])\s*(?P<close>[)\]}])?"
    r"\s+(?:is|seems\s+to\s+be|appears\s+to\s+be)\s+(?:the\s+)?"
    r"(?:correct|right|best|answer|most\s+(?:likely|suitable|appropriate|plausible|accurate|fitting)|"
    r"only\s+(?:correct|plausible|possible))\b",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ParsedAnswer:
    """``letter`` is the chosen option (``"A"``...), or None with ``reason`` saying why not.
    On success ``reason`` says where the answer was read (``"after 'Answer:'"``...)."""

    letter: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.letter is not None


def option_letters(n: int) -> str:
    """The first ``n`` option letters: ``option_letters(4) == "ABCD"``."""
    return LETTERS[:n]


CHOICES_LEAD = " Choose one among the following options:"  # the paper's words between question and options


def format_choices(choices: Sequence[str]) -> str:
    """``(A) first (B) second ...``: the paper's option format (one space between options)."""
    return " ".join(f"({letter}) {str(choice).strip()}" for letter, choice in zip(LETTERS, choices))


def formatted_choices(choices: Sequence[str]) -> str:
    """`` Choose one among the following options:(A) … (B) …`` (note the leading space)."""
    return CHOICES_LEAD + format_choices(choices)


def question_text(question: str, choices: Sequence[str]) -> str:
    """The paper's form of a question: ``<question> Choose one among the following options:(A) … (B) …``."""
    return question.strip() + formatted_choices(choices)


def split_thinking(text: str) -> tuple[str, str, bool]:
    """Return ``(thinking, final_text, closed)``; ``closed`` is False for an unterminated think.

    The *last* closing tag (``</think>`` or ``◁/think▷``) ends the thinking, so a final answer is
    never read from inside it; a close without an open (the template opened it) also counts."""
    text = text or ""
    closes = list(THINK_CLOSE_ANY.finditer(text))
    if closes:
        last = closes[-1]
        thinking = THINK_OPEN_ANY.sub("", text[: last.start()], count=1).strip()
        return thinking, text[last.end():].strip(), True
    opened = THINK_OPEN_ANY.search(text)
    if opened:
        return text[opened.end():].strip(), "", False
    return "", text.strip(), True


def parse_answer(text: str | None, choices: Sequence[str] | None = None, num_choices: int | None = None) -> ParsedAnswer:
    """Parse the option a model chose. ``choices`` (option texts) enable text matching and fix the
    number of options; otherwise ``num_choices`` (default 4) does."""
    choices = [str(c) for c in choices] if choices else None
    valid = option_letters(len(choices) if choices else (num_choices or 4))
    if text is None or not text.strip():
        return ParsedAnswer(None, "empty output")
    thinking, final, closed = split_thinking(text)
    if not closed:
        return ParsedAnswer(None, f"truncated: thinking never closed ({len(thinking)} characters of thinking, no answer)")
    final = _EMPHASIS.sub("", _SPECIAL_TOKEN.sub(" ", final)).strip()
    if not final:
        return ParsedAnswer(None, "no answer after thinking")

    tags = ANSWER_BLOCK.findall(final)
    if tags:
        content = next((t for t in reversed(tags) if t.strip()), "")
        parsed = _read_content(content, choices, valid)
        if parsed is not None:
            return _where(parsed, "from the <answer> tag")
        if _REFUSAL.search(content):
            return ParsedAnswer(None, f"refused or undecided in the <answer> tag: {_snippet(content)}")
        return ParsedAnswer(None, f"the <answer> tag names no option: {_snippet(content)}")

    # A box and the answer statements are both read. A box that names an option wins, unless an
    # answer statement *after* it names a different one (the last explicit answer is the model's
    # word); a box holding an expression (``\boxed{x^2}``) falls through to the statements.
    box_at, box = _read_boxes(final, choices, valid)
    statement_at, statement = _read_statements(final, choices, valid)
    if box is not None and (box.ok or box.reason.startswith("refused")):
        if statement is not None and statement.ok and statement.letter != box.letter and statement_at > box_at:
            return statement
        return box
    if statement is not None:
        return statement
    if box is not None and not box.reason.startswith("\\boxed{} names no option"):
        return box  # ambiguous or out of range inside the box, and no statement elsewhere

    lines = [line for line in final.splitlines() if line.strip()]
    for where, line in (("the last line", lines[-1]), ("the first line", lines[0]))[: 2 if len(lines) > 1 else 1]:
        parsed = _parse_line(line, choices, valid)
        if parsed is not None:
            return _where(parsed, f"on {where}")

    alone = _named_alone(final, choices, valid)
    if alone is not None:
        return alone
    if box is not None:
        return box
    refusal = _REFUSAL.search(final)
    if refusal:
        return ParsedAnswer(None, f"refused or undecided: {_snippet(_sentence_around(final, refusal.start()))}")
    return ParsedAnswer(None, f"no answer found (text ends {_snippet(final[-60:])})")


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """``(start, content)`` of every ``\\boxed{…}``, braces matched (``\\boxed{\\text{C}}``); a box
    left open (truncated) is skipped."""
    boxes, pos = [], 0
    while (opened := _BOX_OPEN.search(text, pos)) is not None:
        depth, i = 1, opened.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0) if text[i - 1] != "\\" else 0
            i += 1
        if depth:
            break
        boxes.append((opened.start(), text[opened.end(): i - 1]))
        pos = i
    return boxes


def _unlatex(content: str) -> str:
    """``\\text{(B) 25\\%}`` → ``(B) 25%``: text wrappers and escapes removed, innermost first."""
    for _ in range(4):
        unwrapped = _LATEX_WRAP.sub(r"\1", content)
        if unwrapped == content:
            break
        content = unwrapped
    return _LATEX_ESCAPE.sub(r"\1", content).strip()


def _read_content(content: str, choices: Sequence[str] | None, valid: str) -> ParsedAnswer | None:
    """A tag's or box's content: an answer head, else a line holding only the answer."""
    read = _parse_head(content, choices, valid)
    return read[0] if read else _parse_line(content, choices, valid)


def _read_boxes(final: str, choices: Sequence[str] | None, valid: str) -> tuple[int, ParsedAnswer | None]:
    """The last non-empty box: ``(start, answer)``; the answer is a failure that says why when the
    box names no option, and None when there is no box."""
    boxes = _boxed_contents(final)
    if not boxes:
        return -1, None
    start, content = next(((s, c) for s, c in reversed(boxes) if c.strip()), boxes[-1])
    content = _unlatex(content)
    parsed = _read_content(content, choices, valid)
    if parsed is not None:
        return start, _where(parsed, "from \\boxed{}")
    if _REFUSAL.search(content):
        return start, ParsedAnswer(None, f"refused or undecided in \\boxed{{}}: {_snippet(content)}")
    return start, ParsedAnswer(None, f"\\boxed{{}} names no option: {_snippet(content)}")


def _read_statements(final: str, choices: Sequence[str] | None, valid: str) -> tuple[int, ParsedAnswer | None]:
    """The last statement of an answer: a marker followed by an answer (``Answer: C``) or a verdict
    after a letter (``Option C is correct``), as ``(start, answer)``. A weak reading (an option's
    text somewhere in the sentence, a bracketed letter further on) only counts if no statement gives
    a strong one."""
    statements = [(m.start(), "marker", m) for m in _MARKER.finditer(final)]
    statements += [(m.start("letter"), "verdict", m) for m in _VERDICT_AFTER.finditer(final)]
    weak: tuple[int, ParsedAnswer] | None = None
    for at, kind, match in sorted(statements, key=lambda item: item[0], reverse=True)[:_MAX_STATEMENTS]:
        if kind == "verdict":
            letter = match["letter"]
            if letter.isupper() or match["open"] or match["option"]:
                return at, _where(_letter_result(letter.upper(), valid), f"from {_snippet(match.group(0).strip())}")
            continue
        read = _parse_head(final[match.end(): match.end() + _HEAD_WINDOW], choices, valid)
        if read is None:
            continue
        parsed, strong = read
        parsed = _where(parsed, f"after {_snippet(match.group(0))}")
        if strong:
            return at, parsed
        weak = weak or (at, parsed)
    return weak if weak is not None else (-1, None)


# -- helpers -------------------------------------------------------------------------------------


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _sentence_around(text: str, index: int) -> str:
    start = max(text.rfind(".", 0, index), text.rfind("\n", 0, index)) + 1
    end = min([i for i in (text.find(".", index), text.find("\n", index)) if i != -1] or [len(text)])
    return text[start:end + 1]


def _where(parsed: ParsedAnswer, where: str) -> ParsedAnswer:
    return ParsedAnswer(parsed.letter, where if parsed.ok else parsed.reason)


def _clean(text: str) -> str:
    """Markdown and leading punctuation removed, first paragraph only."""
    text = _MARKDOWN.sub("", text).lstrip(_STRIP_LEAD)
    return re.split(r"\n\s*\n", text, maxsplit=1)[0].strip()


def _normalise(text: str) -> str:
    text = re.sub(r"[^\w\s]|_", " ", text.lower())
    return " ".join(text.split())


def _bare(text: str) -> str:
    """Normalised, without a leading article: ``"The Car horn."`` → ``"car horn"``."""
    return _ARTICLE.sub("", _normalise(text))


def _out_of_range(letter: str, valid: str) -> ParsedAnswer:
    return ParsedAnswer(None, f"out of range: option {letter}, but the question only has {valid[0]}–{valid[-1]}")


def _ambiguous(letters: Sequence[str]) -> ParsedAnswer:
    return ParsedAnswer(None, f"ambiguous: names several options ({' and '.join(sorted(set(letters)))})")


def _letter_result(letter: str, valid: str) -> ParsedAnswer:
    return ParsedAnswer(letter) if letter in valid else _out_of_range(letter, valid)


def _is_marked(found: re.Match) -> bool:
    return bool(found["option"] or found["open"] or found["close"])


def _second_option(rest: str) -> str | None:
    """The letter of a second option right after the first (``A or B``, ``(A)/(B)``, ``B, C``)."""
    other = _CONNECTOR.match(rest)
    if other is None:
        return None
    letter = other["letter"]
    if other["open"]:
        return letter.upper()
    if not letter.isupper():
        return None
    if letter in "AI" and re.match(r"\s+[a-z]", rest[other.end():]):
        return None  # "C and I think", "B or A dog": English words
    return letter


def _is_option_text(rest: str, letter: str, choices: Sequence[str] | None, valid: str) -> bool:
    if not choices or letter not in valid:
        return False
    said, option = _bare(rest), _bare(choices[valid.index(letter)])
    return bool(option) and (said == option or said.startswith(option + " "))


def _parse_head(segment: str, choices: Sequence[str] | None, valid: str) -> tuple[ParsedAnswer, bool] | None:
    """Read the answer at the start of ``segment`` (what follows a marker, or a tag's content).

    Returns ``(answer, strong)`` where the answer is a letter or a decided failure (out of range,
    ambiguous), or None when the segment holds no answer (the caller looks elsewhere). ``strong``:
    the answer starts the segment; weak: an option text or bracketed letter later in the sentence."""
    head = _clean(segment)
    if not head:
        return None
    head = _FILLER.sub("", head)
    if not head or _NOT_AN_ANSWER.match(head):
        return None
    first_line = head.splitlines()[0]
    if _HEDGE.match(head):
        return ParsedAnswer(None, f"ambiguous: {_snippet(first_line)}"), True
    found = _HEAD.match(head)
    if found:
        candidate, rest = found["letter"], head[found.end():]
        second = _second_option(rest)
        if second and (candidate.isupper() or _is_marked(found)) and second != candidate.upper():
            return _ambiguous([candidate.upper(), second]), True
        follows = rest.lstrip(" \t")
        if (
            not follows or follows[0] in "\n.:：,;!?-–—<'\"’”"  # "C", "C.", "c,": the letter alone
            or (_is_marked(found) and (candidate.isupper() or found["open"] or found["option"]))  # "(C) a dog"
            or (candidate.isupper() and _is_option_text(rest, candidate, choices, valid))  # "A dog barking"
            or (candidate.isupper() and candidate not in "AI")  # "C because …": only A and I are words
        ):
            letter = candidate.upper()
            later = {m.upper() for m in _LATER_ALTERNATIVE.findall(first_line)} - {letter}
            if later:
                return _ambiguous([letter, *later]), True
            return _letter_result(letter, valid), True
    if choices:
        sentence = re.split(r"(?<=[.!?;])\s", first_line, maxsplit=1)[0]
        by_text = _match_option_text(sentence, choices, valid)
        if by_text is not None:
            return by_text
    bracketed = {m.upper() for m in _BRACKETED.findall(first_line)}
    if len(bracketed) == 1:
        return _letter_result(bracketed.pop(), valid), False
    if len(bracketed) > 1:
        return _ambiguous(sorted(bracketed)), False
    return None


def _parse_line(line: str, choices: Sequence[str] | None, valid: str) -> ParsedAnswer | None:
    """A line without a marker counts only if it holds nothing but the answer: a letter (``C``,
    ``(C)``, ``Option C``), a letter and its option's text (``C) car horn``), or the option text."""
    head = _clean(line)
    if not head:
        return None
    found = _HEAD.match(head)
    if found:
        letter, rest = found["letter"].upper(), head[found.end():]
        second = _second_option(rest)
        if second and (found["letter"].isupper() or _is_marked(found)) and second != letter:
            return _ambiguous([letter, second])
        tail = rest.strip(" \t.:：,;!)-–—'\"’”")
        if not tail or (choices and letter in valid and _bare(tail) == _bare(choices[valid.index(letter)])):
            return _letter_result(letter, valid)
    if choices:
        said = _bare(head)
        hits = [i for i, c in enumerate(choices) if _bare(c) and said == _bare(c)]
        if len(hits) == 1:
            return ParsedAnswer(valid[hits[0]])
    return None


_OPTION_WORD = re.compile(r"(?:\b[Oo]ption|\b[Cc]hoice|选项)\s*[(\[{]?\s*([A-Z])\b")


def _named_alone(final: str, choices: Sequence[str] | None, valid: str) -> ParsedAnswer | None:
    """The option a text begins with, in brackets (``(B) 3.3 MeV``, ``选项 (B) …``), when the text
    names no other option: no other bracketed letter or ``Option X``, no other option's text."""
    head = _clean(final)
    found = _HEAD.match(head)
    if not found or not (found["open"] and found["close"]):
        return None
    letter = found["letter"].upper()
    named = {m.upper() for m in _BRACKETED.findall(final)} | set(_OPTION_WORD.findall(final))
    if choices:
        said = f" {_normalise(final)} "
        for i, _, pattern in _prepared(tuple(choices)):
            if pattern.search(said):
                named.add(valid[i])
                said = pattern.sub(" | ", said)  # masked: a shorter option inside it does not count
    if named - {letter}:
        return None
    return _where(_letter_result(letter, valid), f"named alone at the start ({_snippet(found.group(0))})")


@lru_cache(maxsize=256)
def _prepared(choices: tuple[str, ...]) -> tuple[tuple[int, str, re.Pattern[str]], ...]:
    """``(index, bare text, pattern)`` per non-empty option, longest text first."""
    bare = [(i, _bare(c)) for i, c in enumerate(choices)]
    return tuple((i, b, re.compile(rf"(?<=\s){re.escape(b)}(?=\s)"))
                 for i, b in sorted(bare, key=lambda item: -len(item[1])) if b)


def _match_option_text(sentence: str, choices: Sequence[str], valid: str) -> tuple[ParsedAnswer, bool] | None:
    """The option whose text the sentence names; longer options are matched first and masked, so
    ``hot dog`` does not also count as ``dog``; two different options named is ambiguous. Strong
    when a named option starts the sentence (after an article)."""
    said = f" {_normalise(sentence)} "
    start = _ARTICLE.sub("", said.strip())
    hits, strong = [], False
    for i, option, pattern in _prepared(tuple(choices)):
        if pattern.search(said):
            hits.append(valid[i])
            strong = strong or start == option or start.startswith(option + " ")
            said = pattern.sub(" | ", said)  # masked: a shorter option inside it does not count
    if len(hits) == 1:
        return ParsedAnswer(hits[0]), strong
    if len(hits) > 1:
        return ParsedAnswer(None, f"ambiguous: names the texts of several options ({' and '.join(sorted(hits))})"), strong
    return None
