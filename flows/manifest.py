"""Reading build-avrt's input: the project's JSONL, AVQA's annotation JSON, image + audio rows.

* JSONL (``.jsonl``): ``{"id", "video", "question", "choices": [4 texts], "answer": "A".."D"}``,
  optional ``question_type`` and ``split``; instead of ``video``, a row may give ``image`` and
  ``audio`` (OmniBench / AVQA-R1-6K style). Relative paths are relative to the manifest.
* AVQA (``.json``): a list of ``{id, video_name, question_text, multi_choice, answer (0-based),
  question_type, ...}``; videos are ``{video_dir}/{video_name}.mp4`` (``--video-dir``; default
  ``videos/`` beside the file if it exists, else the file's folder).

The same loader serves evaluation (``training.benchmarks`` for ``manifest`` and ``avqa``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filters.answers import LETTERS


class ManifestError(ValueError):
    pass


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


def load_manifest(path: str | Path, video_dir: str | Path | None = None, limit: int | None = None,
                  split: str = "train") -> list[Sample]:
    """Load samples from a JSONL manifest or an AVQA annotation file; ids must be unique.

    ``video_dir``: where relative media paths (JSONL) or ``{video_name}.mp4`` (AVQA) are found.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        base = Path(video_dir) if video_dir else path.parent
        samples = [_from_jsonl(row, base, split, i) for i, row in enumerate(rows)]
    else:
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise ManifestError(f"{path}: expected a JSON list of AVQA annotations")
        default = path.parent / "videos" if (path.parent / "videos").is_dir() else path.parent
        base = Path(video_dir) if video_dir else default
        samples = [_from_avqa(row, base, split, i) for i, row in enumerate(rows)]
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise ManifestError(f"{path}: duplicate id {sample.id!r}")
        seen.add(sample.id)
    return samples[:limit] if limit else samples


def _resolve(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def _check(sample: Sample, where: str) -> Sample:
    if not sample.question.strip():
        raise ManifestError(f"{where}: empty question")
    if not 2 <= len(sample.choices) <= len(LETTERS):
        raise ManifestError(f"{where}: needs 2 or more choices, got {len(sample.choices)}")
    if sample.answer not in LETTERS[: len(sample.choices)]:
        raise ManifestError(f"{where}: answer {sample.answer!r} is not one of the options")
    if not sample.video and not (sample.image and sample.audio):
        raise ManifestError(f"{where}: needs 'video' or both 'image' and 'audio'")
    return sample


def _from_jsonl(row: dict[str, Any], base: Path, split: str, line: int) -> Sample:
    where = f"line {line + 1}"
    try:
        answer = row["answer"]
        if isinstance(answer, int):
            answer = LETTERS[answer]
        known = {"id", "video", "image", "audio", "question", "choices", "answer", "question_type", "split"}
        sample = Sample(id=str(row["id"]), question=str(row["question"]), choices=[str(c) for c in row["choices"]],
                        answer=str(answer).strip().upper(), video=_resolve(base, row.get("video")),
                        image=_resolve(base, row.get("image")), audio=_resolve(base, row.get("audio")),
                        question_type=str(row.get("question_type", "")), split=str(row.get("split", split)),
                        extra={k: v for k, v in row.items() if k not in known})
    except KeyError as err:
        raise ManifestError(f"{where}: missing field {err}") from None
    return _check(sample, where)


def _from_avqa(row: dict[str, Any], base: Path, split: str, index: int) -> Sample:
    where = f"AVQA entry {index}"
    try:
        choices = [str(c) for c in row["multi_choice"]]
        sample = Sample(id=str(row.get("id", row["video_name"])), question=str(row["question_text"]), choices=choices,
                        answer=LETTERS[int(row["answer"])], video=str(base / f"{row['video_name']}.mp4"),
                        question_type=str(row.get("question_type", "")), split=split,
                        extra={"video_name": row["video_name"], "question_relation": row.get("question_relation")})
    except (KeyError, ValueError, IndexError) as err:
        raise ManifestError(f"{where}: bad or missing field ({err})") from None
    return _check(sample, where)
