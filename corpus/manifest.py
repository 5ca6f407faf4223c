"""Reading build-avrt's input: the project's JSONL, AVQA's annotation JSON, image + audio rows.

* JSONL (``.jsonl``): ``{"id", "video", "question", "choices": [texts], "answer": "A".. or 0-based
  index}``, optional ``question_type`` and ``split``; instead of ``video``, a row may give ``image``
  and ``audio`` (OmniBench / AVQA-R1-6K style). Relative paths are relative to the manifest.
* AVQA (``.json``): a list of ``{id, video_name, question_text, multi_choice, answer (0-based),
  question_type, ...}``; videos are ``{video_dir}/{video_name}.mp4`` (``--video-dir``; default
  :func:`avqa_video_dir`: the AVQA repository's ``data/video`` for its ``data/annotation/*.json``).

Every row is checked before any work starts, and every problem is reported at once (line, id, what
is wrong): :func:`read_manifest` returns the valid samples and the invalid rows, :func:`load_manifest`
refuses a manifest with invalid rows unless asked to skip them. The same loader serves evaluation
(``evaluation.benchmarks`` for ``manifest`` and ``avqa``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from configs import UserError
from filters.answers import LETTERS

JSONL_FIELDS = ("id", "video", "image", "audio", "question", "choices", "answer", "question_type", "split")
MAX_LISTED = 1000  # invalid rows spelled out in one error message; the count is always exact


@dataclass(frozen=True)
class Sample:
    id: str
    question: str
    choices: list[str]
    answer: str  # gold letter
    video: str | None = None
    image: str | None = None
    audio: str | None = None
    question_type: str = ""
    split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InvalidRow:
    """A manifest row that cannot become a sample: where it is, its id if it has one, and why."""

    where: str  # "line 12" (JSONL) or "entry 3" (AVQA, 0-based like the list)
    reason: str
    id: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        return f"{self.where}{f' (id {self.id!r})' if self.id is not None else ''}: {self.reason}"

    def rejected_row(self) -> dict[str, Any]:
        """The row recorded in ``rejected/`` with ``--skip-invalid`` (ids made unique per line)."""
        return {"id": f"{self.id or ''}@{self.where.replace(' ', '')}", "split": self.split, "status": "rejected",
                "stage": "manifest", "reason": f"{self.reason} ({self.where})"}


@dataclass(frozen=True)
class ManifestReading:
    samples: list[Sample]
    invalid: list[InvalidRow]


class ManifestError(UserError):
    """The manifest cannot be used as given; the message lists every problem."""

    @classmethod
    def from_rows(cls, path: Path, invalid: list[InvalidRow], total: int) -> ManifestError:
        listed = "\n".join(f"  {row}" for row in invalid[:MAX_LISTED])
        more = f"\n  … and {len(invalid) - MAX_LISTED} more" if len(invalid) > MAX_LISTED else ""
        return cls(f"{path}: {len(invalid)} of {total} rows are invalid:\n{listed}{more}")


def read_manifest(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                  split: str = "train", frames: bool = True) -> ManifestReading:
    """Every row of a JSONL manifest or AVQA annotation file (the first ``limit``), checked.

    ``video_dir``: where relative media paths (JSONL) or ``{video_name}.mp4`` (AVQA) are found.
    ``frames``: a JSONL row must give frames (a video, or an image with its audio), as build-avrt's
    teachers need; without, any media will do (an audio file alone: the trainer's audio-only recipes).
    Raises :class:`ManifestError` only for the file as a whole (missing, unreadable, empty).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from None
    base = media_folder(path, video_dir)
    if path.suffix == ".jsonl":
        rows = jsonl_rows(text)
        rows = rows[:limit] if limit else rows
        parsed = [(where, _from_jsonl(row, base, split, where, frames)) for where, row in rows]
    else:
        entries = json_list(path, text)
        entries = entries[:limit] if limit else entries
        parsed = [(f"entry {i}", _from_avqa(row, base, split, f"entry {i}")) for i, row in enumerate(entries)]
    if not parsed:
        raise ManifestError(f"{path}: the manifest has no rows")
    return collect_rows(parsed)


def collect_rows(parsed: list[tuple[str, Sample | InvalidRow]]) -> ManifestReading:
    """``(where, sample or invalid row)`` in file order as a reading; a repeated id is invalid
    (its first row stays a sample)."""
    samples: list[Sample] = []
    invalid: list[InvalidRow] = []
    first_seen: dict[str, str] = {}
    for where, result in parsed:
        if isinstance(result, InvalidRow):
            invalid.append(result)
        elif result.id in first_seen:
            invalid.append(InvalidRow(where, f"duplicate id {result.id!r} (first at {first_seen[result.id]})",
                                      result.id, result.split))
        else:
            first_seen[result.id] = where
            samples.append(result)
    return ManifestReading(samples, invalid)


def load_manifest(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                  split: str = "train", skip_invalid: bool = False) -> list[Sample]:
    """The valid samples; see :func:`checked_reading` for what is refused."""
    return checked_reading(path, video_dir, limit, split, skip_invalid).samples


def checked_reading(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                    split: str = "train", skip_invalid: bool = False) -> ManifestReading:
    """:func:`read_manifest`, refused (every invalid row listed) when a row is invalid, unless
    ``skip_invalid``; a manifest with no valid sample is always refused."""
    return refuse_invalid(path, read_manifest(path, video_dir, limit, split), skip_invalid)


def refuse_invalid(path: str | Path, reading: ManifestReading, skip_invalid: bool = False) -> ManifestReading:
    """``reading``, refused (every invalid row listed) when a row is invalid, unless ``skip_invalid``;
    refused always when no row is a valid sample."""
    total = len(reading.samples) + len(reading.invalid)
    if reading.invalid and not skip_invalid:
        raise ManifestError.from_rows(Path(path), reading.invalid, total)
    if not reading.samples:
        raise ManifestError(f"{path}: none of its {total} rows is a valid sample")
    return reading


def media_folder(path: Path, video_dir: str | Path | None = None) -> Path:
    """Where a manifest's relative media paths (JSONL) or ``{video_name}.mp4`` (AVQA) are found: ``video_dir``,
    else the JSONL's own folder or :func:`avqa_video_dir`."""
    if video_dir:
        return Path(video_dir)
    return path.parent if path.suffix == ".jsonl" else avqa_video_dir(path)


def avqa_video_dir(path: Path) -> Path:
    """Default AVQA video folder for an annotation file: the first of ``videos/`` or ``video/`` beside it,
    ``../video/``, ``../videos/`` (the AVQA repository keeps ``data/annotation/`` and ``data/video/``),
    else the file's own folder."""
    for candidate in (path.parent / "videos", path.parent / "video", path.parent.parent / "video",
                      path.parent.parent / "videos"):
        if candidate.is_dir():
            return candidate
    return path.parent


class HasMedia(Protocol):
    id: str
    video: str | None
    image: str | None
    audio: str | None


def missing_media(items: list[HasMedia]) -> list[tuple[str, str]]:
    """``(id, path)`` of every media file (video, image, audio) the items name that does not exist."""
    return [(item.id, path) for item in items for path in (item.video, item.image, item.audio)
            if path and not Path(path).exists()]


def no_media_found(items: list[HasMedia], noun: str) -> str | None:
    """When every item misses its media, which says the folder is wrong, not the items: what was looked
    for and where; else None. Stops at the first item whose media exist (a run's usual case: one look)."""
    first = None
    for item in items:
        missing = missing_media([item])
        if not missing:
            return None
        first = first or missing[0][1]
    if first is None:
        return None
    return f"none of the {len(items)} {noun} has its media (e.g. {first} does not exist, looked in {Path(first).parent})"


# ----------------------------------------------------------------------------- file formats


def jsonl_rows(text: str) -> list[tuple[str, Any]]:
    """(``"line N"``, parsed value or :class:`InvalidRow`) for every non-blank line."""
    rows: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            rows.append((where, json.loads(line)))
        except json.JSONDecodeError as err:
            rows.append((where, InvalidRow(where, f"invalid JSON: {err.msg} at column {err.colno}")))
    return rows


def json_list(path: Path, text: str, what: str = "AVQA annotations",
              hint: str = " (a .json manifest is an AVQA annotation list; use .jsonl for one row per line)") -> list[Any]:
    """A JSON file's list of rows; anything else is a ``ManifestError`` naming ``what`` was expected."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: invalid JSON: {err.msg} at line {err.lineno} column {err.colno}{hint}") from None
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- field checks


def shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_field(row: dict[str, Any], name: str, problems: list[str], required: bool = True) -> str | None:
    """A text field (numbers are accepted as text); records what is wrong in ``problems``."""
    if name not in row or row[name] is None:
        if required:
            problems.append(f"missing field '{name}'")
        return None
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        problems.append(f"'{name}' must be a text, got {shown(value)}")
        return None
    value = str(value)
    if required and not value.strip():
        problems.append(f"empty '{name}'")
        return None
    return value


def choices_field(row: dict[str, Any], name: str, problems: list[str]) -> list[str] | None:
    """The row's option texts, or None with the problem recorded."""
    if name not in row:
        problems.append(f"missing field {name!r}")
        return None
    value = row[name]
    if isinstance(value, str):
        problems.append(f"'{name}' must be a list of option texts, got the string {shown(value)}")
        return None
    if not isinstance(value, list):
        problems.append(f"'{name}' must be a list of option texts, got {shown(value)}")
        return None
    if not 2 <= len(value) <= len(LETTERS):
        problems.append(f"needs 2 to {len(LETTERS)} choices, got {len(value)}")
        return None
    bad = [c for c in value if isinstance(c, bool) or not isinstance(c, (str, int, float)) or not str(c).strip()]
    if bad:
        problems.append(f"'{name}' holds {len(bad)} empty or non-text option(s), e.g. {shown(bad[0])}")
        return None
    return [str(c) for c in value]


def answer_field(value: Any, n_choices: int | None, problems: list[str]) -> str | None:
    """The gold letter from a letter (any case) or a 0-based index into the choices."""
    if value is None:
        problems.append("missing field 'answer'")
        return None
    letters = LETTERS[:n_choices] if n_choices else None
    if isinstance(value, int) and not isinstance(value, bool):
        if letters is not None and 0 <= value < len(letters):
            return letters[value]
        span = f" (0 to {len(letters) - 1} for {len(letters)} choices)" if letters else ""
        problems.append(f"answer index {value} is not one of the options{span}")
        return None
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        letter = value.strip().upper()
        if letters is None or letter in letters:
            return letter
        problems.append(f"answer {shown(value)} is not one of the options (A to {letters[-1]})")
        return None
    problems.append(f"answer must be a letter or a 0-based index, got {shown(value)}")
    return None


_LETTERED = re.compile(r"^\s*[(\[]?([A-Z])[)\].:：]\s*(.*)$", re.DOTALL)


def lettered_option(option: str) -> tuple[str, str] | None:
    """``"A. text"`` / ``"(A) text"`` / ``"A) text"`` -> ``("A", "text")``; None when not lettered."""
    found = _LETTERED.match(option)
    return (found.group(1), found.group(2).strip()) if found else None


def _from_jsonl(row: Any, base: Path, split: str, where: str, frames: bool = True) -> Sample | InvalidRow:
    if isinstance(row, InvalidRow):
        return row
    if not isinstance(row, dict):
        return InvalidRow(where, f"expected a JSON object, got {shown(row)}", split=split)
    problems: list[str] = []
    sample_id = text_field(row, "id", problems)
    row_split = text_field(row, "split", problems, required=False) or split
    question = text_field(row, "question", problems)
    choices = choices_field(row, "choices", problems)
    answer = answer_field(row.get("answer"), len(choices) if choices else None, problems)
    media = {name: text_field(row, name, problems, required=False) for name in ("video", "image", "audio")}
    enough = (media["video"] or (media["image"] and media["audio"])) if frames else any(media.values())
    if not enough and not any(p.startswith(("'video'", "'image'", "'audio'")) for p in problems):
        problems.append("needs 'video' or both 'image' and 'audio'" if frames else "needs 'video', 'image' or 'audio'")
    question_type = text_field(row, "question_type", problems, required=False) or ""
    if problems:
        return InvalidRow(where, "; ".join(problems), sample_id, row_split)
    return Sample(id=sample_id, question=question, choices=choices, answer=answer,
                  video=resolve_media(base, media["video"]), image=resolve_media(base, media["image"]),
                  audio=resolve_media(base, media["audio"]), question_type=question_type, split=row_split,
                  extra={k: v for k, v in row.items() if k not in JSONL_FIELDS})


def avqa_fields(row: Any, split: str, where: str, media_field: str = "video_name",
                kind: str = "AVQA annotation") -> tuple[dict[str, Any], str] | InvalidRow:
    """An AVQA-style row (AVQA's annotation JSON, R1-AQA's JSONL) checked: ``Sample`` keyword arguments
    from ``id`` (else ``video_name``), ``question_text``, ``multi_choice``, ``answer`` (a 0-based index,
    "2" accepted) and optional ``question_type``, with the required ``media_field``'s text; or why the
    row is invalid."""
    if not isinstance(row, dict):
        return InvalidRow(where, f"expected an {kind} object, got {shown(row)}", split=split)
    problems: list[str] = []
    video_name = text_field(row, "video_name", problems, required=media_field == "video_name")
    media = video_name if media_field == "video_name" else text_field(row, media_field, problems)
    sample_id = text_field(row, "id", problems, required=False) or video_name
    if sample_id is None and media_field != "video_name":
        problems.append("missing field 'id'")
    question = text_field(row, "question_text", problems)
    choices = choices_field(row, "multi_choice", problems)
    raw_answer = row.get("answer")
    if isinstance(raw_answer, str) and raw_answer.strip().isdigit():  # some AVQA dumps store "2"
        raw_answer = int(raw_answer)
    if raw_answer is not None and not isinstance(raw_answer, int):
        problems.append(f"AVQA 'answer' must be a 0-based index, got {shown(raw_answer)}")
        answer = None
    else:
        answer = answer_field(raw_answer, len(choices) if choices else None, problems)
    question_type = text_field(row, "question_type", problems, required=False) or ""
    if problems:
        return InvalidRow(where, "; ".join(problems), sample_id, split)
    return {"id": sample_id, "question": question, "choices": choices, "answer": answer,
            "question_type": question_type, "split": split}, media


def _from_avqa(row: Any, base: Path, split: str, where: str) -> Sample | InvalidRow:
    checked = avqa_fields(row, split, where)
    if isinstance(checked, InvalidRow):
        return checked
    fields, video_name = checked
    return Sample(**fields, video=str(base / f"{video_name}.mp4"),
                  extra={"video_name": video_name, "question_relation": row.get("question_relation")})


def resolve_media(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else base / p)
