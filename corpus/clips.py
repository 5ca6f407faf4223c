"""build-questions' inputs and its manifest rows.

* Clips (``--clips``): a folder of videos or audio files (the file name without its extension is the
  id), or a JSONL of ``{"id", "video" | "audio"}`` (relative paths are relative to the JSONL).
* Captions made elsewhere (``--captions``): AudioSetCaps' published CSV as it is (``id,caption``; an
  id matches a clip's id, with or without AudioSet's leading ``Y``), or a JSONL of ``{"id", "caption"}``.
* A written question becomes a row of the project's manifest (``corpus.manifest``'s JSONL: what
  build-avrt's ``--manifest`` and the trainer read), with where it came from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from configs import UserError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")


@dataclass(frozen=True)
class Clip:
    id: str
    video: str | None = None
    audio: str | None = None
    caption: str | None = None  # an audio caption made elsewhere (--captions): the captioner is not asked
    split: str = "train"
    image: None = None  # what the media store reads: a video, or an audio file alone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ClipsError(UserError):
    """The clips or the captions cannot be used as given."""


def read_clips(path: str | Path, limit: int | None = None, split: str = "train") -> list[Clip]:
    """The clips of a folder (sorted by name) or a JSONL; the first ``limit``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES)
        clips = [Clip(p.stem, video=str(p) if p.suffix.lower() in VIDEO_SUFFIXES else None,
                      audio=str(p) if p.suffix.lower() in AUDIO_SUFFIXES else None, split=split) for p in files]
        if not clips:
            raise ClipsError(f"--clips {path}: no video ({', '.join(VIDEO_SUFFIXES)}) or audio "
                             f"({', '.join(AUDIO_SUFFIXES)}) file in the folder")
    elif path.is_file():
        clips = [_clip_row(row, where, path.parent, split) for where, row in _jsonl(path)]
    else:
        raise ClipsError(f"--clips {path}: no such folder or file")
    seen: set[str] = set()
    for clip in clips:
        if clip.id in seen:
            raise ClipsError(f"--clips {path}: duplicate id {clip.id!r}")
        seen.add(clip.id)
    return clips[:limit] if limit else clips


def _jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ClipsError(f"{path}:{number}: invalid JSON ({err.msg})") from None
    if not rows:
        raise ClipsError(f"{path}: no rows")
    return rows


def _clip_row(row: Any, where: str, base: Path, split: str) -> Clip:
    if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)) or not (row.get("video") or row.get("audio")):
        raise ClipsError(f"{where}: a clip row is {{\"id\", \"video\" | \"audio\"}}, got {json.dumps(row)[:80]}")

    def resolve(value: str | None) -> str | None:
        return str(value if Path(value).is_absolute() else base / value) if value else None

    return Clip(str(row["id"]), video=resolve(row.get("video")), audio=resolve(row.get("audio")),
                split=str(row.get("split") or split))


def read_captions(path: str | Path) -> dict[str, str]:
    """``{id: caption}`` from AudioSetCaps' CSV (``id,caption``) or a JSONL of ``{"id", "caption"}``."""
    path = Path(path)
    if not path.is_file():
        raise ClipsError(f"--captions {path}: no such file")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not {"id", "caption"} <= set(reader.fieldnames or ()):
                raise ClipsError(f"--captions {path}: a caption CSV has the columns id and caption "
                                 f"(AudioSetCaps'), got {reader.fieldnames}")
            return {row["id"]: row["caption"] for row in reader if row["id"] and row["caption"]}
    captions = {}
    for where, row in _jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("caption"), str) or "id" not in row:
            raise ClipsError(f"{where}: a caption row is {{\"id\", \"caption\"}}, got {json.dumps(row)[:80]}")
        captions[str(row["id"])] = row["caption"]
    return captions


def with_captions(clips: list[Clip], captions: dict[str, str]) -> list[Clip]:
    """The clips that have a caption (``id`` or AudioSet's ``Y`` + id), each carrying it."""
    found = []
    for clip in clips:
        caption = captions.get(clip.id) or captions.get(f"Y{clip.id}")
        if caption is not None:
            found.append(Clip(clip.id, clip.video, clip.audio, caption, clip.split))
    return found


def manifest_row(clip_id: str, index: int, media: dict[str, str | None], question: str, choices: list[str], answer: str,
                 kind: str, split: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """A manifest row (``corpus.manifest``'s JSONL fields, then where the question came from)."""
    return {"id": f"{clip_id}-q{index}", **{k: v for k, v in media.items() if v}, "question": question,
            "choices": choices, "answer": answer, "question_type": f"generated {kind}", "split": split,
            "clip_id": clip_id, **provenance}


def manifest_clip_ids(path: str | Path) -> set[str]:
    """The clips a written manifest holds questions for (none when there is no manifest)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    return {str(json.loads(line).get("clip_id")) for line in lines if line.strip()}
