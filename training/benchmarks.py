"""Benchmark loaders and scoring rules, one pure function per published format.

Every loader reads local files and returns ``list[BenchItem]``: the question, the option texts
(without letters), the gold letter, a category for the per-category breakdown, extra ``tags`` for
further breakdowns, and the media paths (``video``, or ``image`` + ``audio``, or ``audio`` alone).

Formats (see ``/work/shared/FACTS.md``):

``manifest``  the project's JSONL: ``id, video, question, choices, answer (letter), question_type``;
              a row may give ``image`` + ``audio`` instead of ``video``; paths relative to the file.
``avqa``      AVQA annotation JSON (list): ``id, video_name, question_text, multi_choice,
              answer (0-based index), question_relation, question_type``; videos are
              ``{media_root}/{video_name}.mp4`` (default ``videos/`` beside the JSON, else its folder).
``omnibench`` OmniBench JSONL/JSON: ``index, task type, audio type, question, options, answer
              (option text), audio_path, image_path`` (basenames under ``mm_data/audio`` and
              ``mm_data/image``). Gold is the *index* of ``answer`` in ``options``: the official
              parser mislabels some gold answers, so we never re-parse the gold. The Hugging Face
              parquet (media bytes embedded in ``image``/``audio``) works too: the bytes are written
              once under ``mm_data_extracted/``.
``dailyomni`` Daily-Omni ``qa.json``: ``Question, Choice ["A. ...", ...], Answer (letter), video_id,
              Type, video_category, video_duration``; videos ``Videos/{id}/{id}_video.mp4`` (audio
              from ``{id}_audio.wav`` beside it when present, else from the video); ids
              ``{video_id}#{k}`` (k-th question of that video in file order) unless a row has ``id``.
``mmar``      MMAR-meta.json: ``id, audio_path, question, choices, answer (option text), modality,
              category, sub-category``; audio-only.
``mmau``      MMAU test-mini JSON: ``id, audio_id, question, choices, answer (option text), task,
              difficulty, sub-category``; audio-only.

Scoring (``score_output``):

* ``letter`` (manifest, AVQA, OmniBench, Daily-Omni): the student's answer letter, read with the
  shared parser ``filters.answers.parse_answer``, must equal the gold letter. An unreadable answer
  is wrong (and counted as a parse failure).
* ``token_set`` (MMAR, MMAU): the official MMAU/MMAR ``string_match`` on option *text*: every word
  token of the gold option is in the prediction and no token that only occurs in a wrong option is.
  The prediction is the text of the option the parser read; when no letter can be read, it is the
  final answer text (inside ``<answer>`` if present, after any thinking), as the official script
  would match free text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.answers import LETTERS, parse_answer, split_thinking
from media.files import atomic_write_bytes


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not follow its published format (message names the row)."""


@dataclass(frozen=True)
class BenchItem:
    """One multiple-choice question of any benchmark, with resolved media paths."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str  # gold letter "A", "B", ...
    category: str = ""
    video: str | None = None
    image: str | None = None
    audio: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def answer_text(self) -> str:
        return self.choices[LETTERS.index(self.answer)]

    @property
    def has_visual(self) -> bool:
        return bool(self.video or self.image)

    @property
    def has_audio(self) -> bool:
        """True when the item has a sound source (a video is assumed to carry its audio track)."""
        return bool(self.audio or self.video)

    @property
    def modality(self) -> str:
        """The full input setting: ``av``, ``a`` or ``v``."""
        return ("a" if self.has_audio else "") + ("v" if self.has_visual else "")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer,
                "category": self.category, "video": self.video, "image": self.image, "audio": self.audio,
                "tags": dict(self.tags)}


# ---------------------------------------------------------------- helpers

def _read_rows(path: Path) -> list[dict[str, Any]]:
    """JSON list, JSON object with a list value, JSONL, or parquet (rows as dicts)."""
    if not path.exists():
        raise BenchmarkFormatError(f"benchmark file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BenchmarkFormatError(f"{path}: expected a JSON list of rows")
        data = lists[0]
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected a JSON list of rows")
    return data


def _norm(text: Any) -> str:
    return " ".join(str(text).split()).casefold()


def _list(value: Any) -> list[str]:
    """Option lists may come as JSON lists, numpy arrays (parquet) or JSON strings."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BenchmarkFormatError(f"options are not a list: {value[:60]!r}") from None
    return [str(v) for v in list(value)]


def gold_from_text(answer: str, choices: Sequence[str], where: str) -> str:
    """Gold letter = index of the answer text among the options (exact, then whitespace/case-folded)."""
    if answer in choices:
        return LETTERS[list(choices).index(answer)]
    folded = [_norm(c) for c in choices]
    if folded.count(_norm(answer)) == 1:
        return LETTERS[folded.index(_norm(answer))]
    raise BenchmarkFormatError(f"{where}: answer {answer!r} is not exactly one of the options {list(choices)}")


def _resolve(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else base / p)


def _find(name: str, roots: Sequence[Path], subdirs: Sequence[str]) -> str:
    """First existing ``root/subdir/name``; otherwise the first candidate (reported missing later)."""
    name = str(name)
    if Path(name).is_absolute():
        return name
    candidates = [root / sub / name for root in roots for sub in subdirs]
    candidates += [root / sub / Path(name).name for root in roots for sub in subdirs]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return str(candidates[0])


def _embedded(value: Any, path: str, directory: Path) -> str:
    """``path`` if it exists; else write embedded bytes (``{"bytes", "path"}``) once under ``directory``."""
    if Path(path).exists() or not isinstance(value, Mapping) or not value.get("bytes"):
        return path
    target = directory / Path(str(value.get("path") or Path(path).name)).name
    if not target.exists():
        atomic_write_bytes(target, value["bytes"])
    return str(target)


_LETTERED = re.compile(r"^\s*[(\[]?([A-Z])[)\].:：]\s*(.*)$", re.DOTALL)


def strip_letter(option: str, expected: str) -> str:
    """``"A. text"`` / ``"(A) text"`` / ``"A) text"`` -> ``"text"`` when the letter is ``expected``."""
    found = _LETTERED.match(option)
    if found and found.group(1) == expected:
        return found.group(2).strip()
    return option.strip()


def _check(item: BenchItem, where: str) -> BenchItem:
    if not item.question.strip():
        raise BenchmarkFormatError(f"{where}: empty question")
    if not 2 <= len(item.choices) <= len(LETTERS):
        raise BenchmarkFormatError(f"{where}: needs 2 or more options, got {len(item.choices)}")
    if item.answer not in LETTERS[: len(item.choices)]:
        raise BenchmarkFormatError(f"{where}: gold {item.answer!r} is not one of the options")
    if not (item.video or item.image or item.audio):
        raise BenchmarkFormatError(f"{where}: no media (video, image or audio)")
    return item


def _unique(items: list[BenchItem], path: Path) -> list[BenchItem]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise BenchmarkFormatError(f"{path}: duplicate id {item.id!r}")
        seen.add(item.id)
    return items


def _field(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise KeyError(names[0])


# ---------------------------------------------------------------- loaders

def _from_pipeline(path: str | Path, media_root: str | Path | None) -> list[BenchItem]:
    """Manifest and AVQA files are build-avrt's inputs too: one loader (``flows.manifest``) reads both."""
    from flows.manifest import ManifestError
    from flows.manifest import load_manifest as load_pipeline_manifest

    try:
        samples = load_pipeline_manifest(path, video_dir=media_root)
    except ManifestError as err:
        raise BenchmarkFormatError(str(err)) from None
    return [BenchItem(id=s.id, question=s.question, choices=tuple(s.choices), answer=s.answer,
                      category=s.question_type, video=s.video, image=s.image, audio=s.audio,
                      tags={"question_relation": str(s.extra["question_relation"])}
                      if s.extra.get("question_relation") else {})
            for s in samples]


def load_manifest(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """The project's JSONL manifest (also build-avrt's input); paths relative to the manifest."""
    return _from_pipeline(path, media_root)


def load_avqa(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """AVQA annotations; ``media_root`` is the video folder (default ``videos/`` beside the file)."""
    return _from_pipeline(path, media_root)


def load_omnibench(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """OmniBench rows; media basenames are looked up under ``mm_data/{audio,image}`` (or the root)."""
    path = Path(path)
    roots = [Path(media_root)] if media_root else [path.parent, path.parent.parent]
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path.name} row {i + 1}"
        try:
            choices = tuple(_list(row["options"]))
            answer = gold_from_text(str(row["answer"]), choices, where)
            image = _find(row["image_path"], roots, ["mm_data/image", "image", "images", "."])
            audio = _find(row["audio_path"], roots, ["mm_data/audio", "audio", "audios", "."])
            cache = roots[0] / "mm_data_extracted"  # the Hugging Face parquet embeds the media bytes
            image = _embedded(row.get("image"), image, cache / "image")
            audio = _embedded(row.get("audio"), audio, cache / "audio")
            item = BenchItem(id=str(row.get("index", i)), question=str(row["question"]), choices=choices,
                             answer=answer, category=str(row.get("task type") or ""), image=image, audio=audio,
                             tags={"audio type": str(row.get("audio type") or "")})
        except KeyError as err:
            raise BenchmarkFormatError(f"{where}: missing field {err}") from None
        items.append(_check(item, where))
    return _unique(items, path)


def load_dailyomni(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """Daily-Omni ``qa.json``; ``media_root`` is the ``Videos/`` folder (default beside the file)."""
    path = Path(path)
    if media_root:
        base = Path(media_root)
    else:
        base = path.parent / "Videos" if (path.parent / "Videos").is_dir() else path.parent
    items, per_video = [], {}
    for i, row in enumerate(_read_rows(path)):
        where = f"{path.name} entry {i}"
        try:
            video_id = str(row["video_id"])
            raw = _list(row["Choice"])
            choices = tuple(strip_letter(c, LETTERS[k]) for k, c in enumerate(raw))
            nth = per_video[video_id] = per_video.get(video_id, -1) + 1
            video = base / video_id / f"{video_id}_video.mp4"
            if not video.exists() and (base / f"{video_id}.mp4").exists():
                video = base / f"{video_id}.mp4"
            wav = base / video_id / f"{video_id}_audio.wav"  # the released audio track, if present
            item = BenchItem(id=str(row.get("id") or row.get("qa_id") or f"{video_id}#{nth}"),
                             question=str(row["Question"]), choices=choices,
                             answer=str(row["Answer"]).strip().strip("().").upper(),
                             category=str(row.get("Type") or ""), video=str(video),
                             audio=str(wav) if wav.exists() else None,
                             tags={k: str(row[k]) for k in ("video_duration", "video_category") if row.get(k)})
        except KeyError as err:
            raise BenchmarkFormatError(f"{where}: missing field {err}") from None
        items.append(_check(item, where))
    return _unique(items, path)


def _load_audio_mc(path: Path, media_root: str | Path | None, audio_key: str, category_key: str,
                   tag_keys: Sequence[str]) -> list[BenchItem]:
    base = Path(media_root) if media_root else path.parent
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path.name} row {i + 1}"
        try:
            choices = tuple(_list(row["choices"]))
            item = BenchItem(id=str(row.get("id", i)), question=str(row["question"]), choices=choices,
                             answer=gold_from_text(str(row["answer"]), choices, where),
                             category=str(row.get(category_key) or ""), audio=_resolve(base, row[audio_key]),
                             tags={k: str(row[k]) for k in tag_keys if row.get(k)})
        except KeyError as err:
            raise BenchmarkFormatError(f"{where}: missing field {err}") from None
        items.append(_check(item, where))
    return _unique(items, path)


def load_mmar(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """MMAR-meta.json; ``audio_path`` (``./audio/x.wav``) relative to ``media_root`` or the file."""
    return _load_audio_mc(Path(path), media_root, "audio_path", "category", ["modality", "sub-category"])


def load_mmau(path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    """MMAU test(-mini) JSON; ``audio_id`` relative to ``media_root`` or the file."""
    return _load_audio_mc(Path(path), media_root, "audio_id", "task", ["difficulty", "sub-category"])


LOADERS: dict[str, Callable[..., list[BenchItem]]] = {
    "avqa": load_avqa,
    "omnibench": load_omnibench,
    "dailyomni": load_dailyomni,
    "mmar": load_mmar,
    "mmau": load_mmau,
    "manifest": load_manifest,
}

SCORING_RULE = {"avqa": "letter", "omnibench": "letter", "dailyomni": "letter", "manifest": "letter",
                "mmar": "token_set", "mmau": "token_set"}

SCORING_DOC = {
    "letter": "parsed answer letter == gold letter (filters.answers.parse_answer); unparsed = wrong",
    "token_set": "official MMAU/MMAR string_match of the chosen option's text (or the final answer text "
                 "when no letter is readable) against the gold option text; unparsed = wrong unless the text matches",
}


def load_benchmark(name: str, path: str | Path, media_root: str | Path | None = None) -> list[BenchItem]:
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[name](path, media_root)


# ---------------------------------------------------------------- scoring

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


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def final_answer_text(output: str) -> str:
    """The text a free-text matcher should see: the last ``<answer>`` content, else the text after
    thinking; empty when the thinking never closed."""
    _, final, closed = split_thinking(output or "")
    if not closed:
        return ""
    tags = _ANSWER_TAG.findall(final)
    return (tags[-1] if tags else final).strip()


@dataclass(frozen=True)
class Scored:
    letter: str | None  # the letter the parser read (None: parse failure)
    parse_reason: str
    prediction: str  # what was compared with the gold (a letter, or option/answer text)
    correct: bool


def score_output(item: BenchItem, output: str, rule: str) -> Scored:
    """Score one model output against ``item`` under ``rule`` (``letter`` or ``token_set``)."""
    parsed = parse_answer(output, item.choices)
    if rule == "letter":
        return Scored(parsed.letter, parsed.reason, parsed.letter or "", parsed.letter == item.answer)
    if rule == "token_set":
        prediction = item.choices[LETTERS.index(parsed.letter)] if parsed.letter else final_answer_text(output)
        return Scored(parsed.letter, parsed.reason, prediction,
                      token_set_match(item.answer_text, prediction, item.choices))
    raise ValueError(f"unknown scoring rule {rule!r}")
