"""Training data as published, read directly: one entry point for every layout a recipe trains on.

:func:`dataset_kind` names the layout of a path, :func:`read_dataset` reads it into samples and
invalid rows (with their reasons), :func:`load_dataset` refuses invalid rows unless asked to skip
them. Layouts:

``manifest``    the project's JSONL (``corpus.manifest``), media relative to the file; a row may give
                an audio file alone (build-questions writes such rows for audio clips).
``avqa``        AVQA's annotation JSON (``corpus.manifest``): audio and frames from the videos.
``avqa-r1-6k``  EchoInk-R1's AVQA-R1-6K: a split folder ``AVQA_R1/{train,valid}`` holding
                ``omni_rl_format_{split}.json`` (a JSON list) with ``images/`` and ``audios/``; the
                JSON file itself; or the ``AVQA_R1`` folder (``split`` picks, default train). Rows:
                ``problem_id, problem, options ["A. …", …], solution "<answer>D</answer>", path
                {image, audio}`` (relative to the split folder), ``data_source``; the options lose
                their letters, which must run A, B, C… in order. Image + audio samples.
``r1-aqa``      R1-AQA's AVQA JSONL: ``id, video_name, video_id, question_text, multi_choice, answer
                (0-based), question_relation, question_type, dataset_name, audio_path``; audio-only
                samples, ``audio_path`` relative to ``video_dir`` or the file's folder.
``arc-easy``    ARC-Easy as on the hub (``allenai/ai2_arc``): a folder ``ARC-Easy/`` holding
                ``{train,validation,test}-00000-of-00001.parquet`` (``split`` picks, default train),
                the folder above it, or one parquet file. Rows ``id, question, choices {text, label},
                answerKey``; options are lettered by position (digit labels too), 3 to 5 of them.
                Text-only samples: no media at all.

``split`` also accepts ``valid``/``validation``/``val`` for either dataset's held-out split. Row
checks are ``corpus.manifest``'s (missing fields, option lists, gold letters, duplicate ids).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus.manifest import (
    InvalidRow,
    ManifestError,
    ManifestReading,
    Sample,
    answer_field,
    avqa_fields,
    choices_field,
    collect_rows,
    json_list,
    jsonl_rows,
    lettered_option,
    read_manifest,
    refuse_invalid,
    resolve_media,
    shown,
    text_field,
)
from filters.answers import LETTERS

KINDS = ("manifest", "avqa", "avqa-r1-6k", "r1-aqa", "arc-easy")
R1_6K_FILE = "omni_rl_format_{split}.json"
R1_6K_SPLITS = ("train", "valid")
ARC_FILE = "{split}-00000-of-00001.parquet"
ARC_SPLITS = ("train", "validation", "test")
_HELD_OUT = ("valid", "validation", "val")
_SOLUTION = re.compile(r"^\s*<answer>\s*(.*?)\s*</answer>\s*$", re.DOTALL)


def dataset_kind(path: str | Path) -> str:
    """The layout at ``path`` (one of :data:`KINDS`); a path that is none of them is a ``ManifestError``.

    Folders by the files they hold; ``.parquet`` is ARC-Easy; a ``.json`` by its name
    (``omni_rl_format_*.json``) or its first entry's fields; a ``.jsonl`` by its first row's fields
    (``question_text``/``multi_choice``: R1-AQA)."""
    path = Path(path)
    if path.is_dir():
        if _r1_6k_files(path) or any(_r1_6k_files(path / s) for s in R1_6K_SPLITS):
            return "avqa-r1-6k"
        if _arc_files(path) or _arc_files(path / "ARC-Easy"):
            return "arc-easy"
        raise ManifestError(f"{path}: not a dataset folder (expected an AVQA-R1-6K split folder with "
                            f"{R1_6K_FILE.format(split='SPLIT')}, AVQA_R1/ with train/ and valid/, or ARC-Easy/ "
                            f"with {ARC_FILE.format(split='SPLIT')})")
    if not path.is_file():
        raise ManifestError(f"dataset not found: {path}")
    if path.suffix == ".parquet":
        return "arc-easy"
    if path.suffix == ".jsonl":
        first = next((row for _, row in jsonl_rows(_text_of(path)) if isinstance(row, dict)), {})
        return "r1-aqa" if {"question_text", "multi_choice"} & first.keys() else "manifest"
    if re.fullmatch(R1_6K_FILE.format(split=r".+"), path.name):
        return "avqa-r1-6k"
    try:
        data = json.loads(_text_of(path))
    except json.JSONDecodeError:
        return "avqa"  # read_manifest reports the broken JSON
    first = data[0] if isinstance(data, list) and data else {}
    return "avqa-r1-6k" if isinstance(first, dict) and {"problem", "solution"} <= first.keys() else "avqa"


def read_dataset(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                 split: str | None = None, kind: str | None = None) -> ManifestReading:
    """Every row (the first ``limit``) of the dataset at ``path``, checked: the valid samples and the
    invalid rows with their reasons.

    ``video_dir``: where relative media paths are found (default: the published place beside the file).
    ``split``: which split of a folder holding several (AVQA_R1/, ARC-Easy/); the split label of
    a manifest's or AVQA's samples (default train). ``kind``: the layout (default :func:`dataset_kind`).
    Raises ``ManifestError`` only for the dataset as a whole (not found, unreadable, empty, an unknown split)."""
    kind = kind or dataset_kind(path)
    if kind not in KINDS:
        raise ManifestError(f"unknown dataset layout {kind!r}; choose from {', '.join(KINDS)}")
    if kind in ("manifest", "avqa"):
        return read_manifest(path, video_dir, limit, split or "train", frames=False)  # a recipe may train on audio alone
    if kind == "avqa-r1-6k":
        return _read_r1_6k(_r1_6k_file(Path(path), split), video_dir, limit)
    if kind == "r1-aqa":
        return _read_r1_aqa(Path(path), video_dir, limit, split or "train")
    return _read_arc(_arc_file(Path(path), split), limit)


def load_dataset(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                 split: str | None = None, skip_invalid: bool = False, kind: str | None = None) -> ManifestReading:
    """:func:`read_dataset`, refused (``ManifestError`` listing every invalid row with its reason) when a
    row is invalid, unless ``skip_invalid``; a dataset with no valid sample is always refused."""
    return refuse_invalid(path, read_dataset(path, video_dir, limit, split, kind), skip_invalid)


# ----------------------------------------------------------------------------- where the file is

def _text_of(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read it ({err})") from None


def _r1_6k_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(R1_6K_FILE.format(split="*"))) if folder.is_dir() else []


def _arc_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(ARC_FILE.format(split="*"))) if folder.is_dir() else []


def _split_name(split: str, names: tuple[str, ...]) -> str:
    """``split`` as ``names`` spell it (``valid`` and ``validation`` are one held-out split)."""
    if split in names:
        return split
    held_out = next((n for n in names if n in _HELD_OUT), None)
    return held_out if split in _HELD_OUT and held_out else split


def _pick(files: dict[str, Path], split: str | None, what: str, where: Path) -> Path:
    """The file of ``split`` (default train) among ``{split name: file}``, or a ``ManifestError``
    naming the splits that are there."""
    name = _split_name(split or "train", tuple(files))
    if name in files and files[name].is_file():
        return files[name]
    present = [n for n, f in files.items() if f.is_file()]
    raise ManifestError(f"{where}: no {what} split {split or 'train'!r} (splits here: {', '.join(present) or 'none'})")


def _matching_split(path: Path, pattern: str, names: tuple[str, ...], split: str | None) -> Path:
    """A split file given directly: ``split``, when given, must be the one its name says."""
    own = next((n for n in names if path.name == pattern.format(split=n)), None)
    if split and own and _split_name(split, names) != own:
        raise ManifestError(f"{path}: this is the {own} split, not {split!r}")
    return path


def _r1_6k_file(path: Path, split: str | None) -> Path:
    """The JSON file itself; a split folder's (its only one unless ``split`` names another); AVQA_R1/'s ``split``."""
    if path.is_file():
        return _matching_split(path, R1_6K_FILE, R1_6K_SPLITS, split)
    here = _r1_6k_files(path)
    if len(here) == 1 and not split:
        return here[0]
    folders = {s: (path if here else path / s) / R1_6K_FILE.format(split=s) for s in R1_6K_SPLITS}
    return _pick(folders, split, "AVQA-R1-6K", path)


def _arc_file(path: Path, split: str | None) -> Path:
    """The parquet file itself, or ``split``'s in ARC-Easy/ (given, or the folder holding it)."""
    if path.is_file():
        return _matching_split(path, ARC_FILE, ARC_SPLITS, split)
    folder = path if _arc_files(path) else path / "ARC-Easy"
    return _pick({s: folder / ARC_FILE.format(split=s) for s in ARC_SPLITS}, split, "ARC-Easy", folder)


def _collected(path: Path, rows: list[tuple[str, Any]], limit: int | None,
               make: Callable[[Any, str], Sample | InvalidRow]) -> ManifestReading:
    """The first ``limit`` of ``(where, row)`` made into samples and invalid rows; no row is an error."""
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ManifestError(f"{path}: the dataset has no rows")
    return collect_rows([(where, make(row, where)) for where, row in rows])


def _split_of(path: Path, pattern: str, names: tuple[str, ...]) -> str:
    return next((n for n in names if path.name == pattern.format(split=n)), names[0])


# ----------------------------------------------------------------------------- AVQA-R1-6K

def _read_r1_6k(path: Path, video_dir: str | Path | None, limit: int | None) -> ManifestReading:
    entries = json_list(path, _text_of(path), "AVQA-R1-6K rows", hint="")
    base, split = Path(video_dir) if video_dir else path.parent, _split_of(path, R1_6K_FILE, R1_6K_SPLITS)
    return _collected(path, [(f"entry {i}", row) for i, row in enumerate(entries)], limit,
                      lambda row, where: r1_6k_sample(row, base, split, where))


def unlettered_options(options: list[str], problems: list[str]) -> list[str] | None:
    """``["A. x", "B. y", …]`` -> ``["x", "y", …]``; the letters must run A, B, C… in order."""
    texts = []
    for letter, option in zip(LETTERS, options):
        found = lettered_option(option)
        if not found or found[0] != letter:
            problems.append(f"options must be lettered A, B, C… in order: option {len(texts) + 1} is {shown(option)}, "
                            f"expected '{letter}. …'")
            return None
        if not found[1]:
            problems.append(f"option {letter} has no text")
            return None
        texts.append(found[1])
    return texts


def r1_6k_sample(row: Any, base: Path, split: str, where: str) -> Sample | InvalidRow:
    """One AVQA-R1-6K row as an image + audio sample (media relative to ``base``), or why it cannot be."""
    if not isinstance(row, dict):
        return InvalidRow(where, f"expected an AVQA-R1-6K object, got {shown(row)}", split=split)
    problems: list[str] = []
    sample_id = text_field(row, "problem_id", problems)
    question = text_field(row, "problem", problems)
    lettered = choices_field(row, "options", problems)
    choices = unlettered_options(lettered, problems) if lettered else None
    solution = text_field(row, "solution", problems)
    answer = None
    if solution is not None:
        found = _SOLUTION.match(solution)
        if not found or len(found.group(1)) != 1 or found.group(1) not in LETTERS:
            problems.append(f"solution must be '<answer>X</answer>' with an option letter, got {shown(solution)}")
        else:
            answer = answer_field(found.group(1), len(choices) if choices else None, problems)
    media = row.get("path")
    if media is None:
        problems.append("missing field 'path'")
        image = audio = None
    elif not isinstance(media, dict):
        problems.append(f"'path' must be an object with 'image' and 'audio', got {shown(media)}")
        image = audio = None
    else:
        named = {f"path.{key}": value for key, value in media.items()}
        image, audio = (text_field(named, "path.image", problems), text_field(named, "path.audio", problems))
    if problems:
        return InvalidRow(where, "; ".join(problems), sample_id, split)
    return Sample(id=sample_id, question=question, choices=choices, answer=answer, image=resolve_media(base, image),
                  audio=resolve_media(base, audio), split=split,
                  extra={k: v for k, v in row.items() if k not in ("problem", "options", "solution", "path")})


# ----------------------------------------------------------------------------- R1-AQA

def _read_r1_aqa(path: Path, video_dir: str | Path | None, limit: int | None, split: str) -> ManifestReading:
    base = Path(video_dir) if video_dir else path.parent
    return _collected(path, jsonl_rows(_text_of(path)), limit, lambda row, where: r1_aqa_sample(row, base, split, where))


def r1_aqa_sample(row: Any, base: Path, split: str, where: str) -> Sample | InvalidRow:
    """One R1-AQA AVQA row as an audio-only sample (``audio_path`` relative to ``base``), or why it cannot be."""
    if isinstance(row, InvalidRow):
        return row
    checked = avqa_fields(row, split, where, media_field="audio_path", kind="R1-AQA row")
    if isinstance(checked, InvalidRow):
        return checked
    fields, audio = checked
    return Sample(**fields, audio=resolve_media(base, audio),
                  extra={k: row[k] for k in ("video_name", "video_id", "question_relation", "dataset_name") if k in row})


# ----------------------------------------------------------------------------- ARC-Easy

def _read_arc(path: Path, limit: int | None) -> ManifestReading:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()  # plain values: lists, and None for nulls
    except (OSError, ValueError) as err:  # pyarrow's errors are both
        raise ManifestError(f"{path}: cannot read the parquet file ({err})") from None
    split = _split_of(path, ARC_FILE, ARC_SPLITS)
    return _collected(path, [(f"row {i}", row) for i, row in enumerate(rows)], limit,
                      lambda row, where: arc_sample(row, split, where))


def arc_sample(row: dict[str, Any], split: str, where: str) -> Sample | InvalidRow:
    """One ARC row as a text-only sample: options lettered by position, the gold letter at the
    ``answerKey``'s position among the labels (``"1"``–``"4"`` as ``"A"``–``"D"``)."""
    problems: list[str] = []
    sample_id = text_field(row, "id", problems)
    question = text_field(row, "question", problems)
    choices = labels = None
    raw = row.get("choices")
    if raw is None:
        problems.append("missing field 'choices'")
    elif not isinstance(raw, dict) or "text" not in raw or "label" not in raw:
        problems.append(f"'choices' must be an object with 'text' and 'label' lists, got {shown(raw)}")
    else:
        choices = choices_field({"choices.text": raw["text"]}, "choices.text", problems)
        labels = [str(label).strip() for label in raw["label"] or []]
        if choices and len(labels) != len(choices):
            problems.append(f"{len(choices)} option texts but {len(labels)} labels")
        elif choices and len(set(labels)) != len(labels):
            problems.append(f"repeated option labels {labels}")
    key = text_field(row, "answerKey", problems)
    answer = None
    if key is not None and choices and labels and len(labels) == len(choices):
        if key.strip() not in labels:
            problems.append(f"answerKey {shown(key)} is not one of the labels {labels}")
        else:
            answer = answer_field(labels.index(key.strip()), len(choices), problems)
    if problems:
        return InvalidRow(where, "; ".join(problems), sample_id, split)
    return Sample(id=sample_id, question=question, choices=choices, answer=answer, split=split,
                  extra={"answerKey": key, "labels": labels})

