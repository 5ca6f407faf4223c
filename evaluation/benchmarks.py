"""Benchmark loaders, one pure function per published format, and where ``--data`` points.

Every loader reads local files and returns ``list[BenchItem]``: the question, the option texts
(without letters), the gold letter (``None`` when the published answer is not one of the options:
the item is *unscorable* under the exact rule, see ``evaluation.scoring``), the published answer
text, a category, extra ``tags`` for breakdowns, and the media paths (``video``, or ``image`` +
``audio``, or ``audio`` alone).

Published layouts (``--data`` may name the file, or the folder it was downloaded to):

``avqa``      AVQA repository: ``data/annotation/{train,val}_qa.json`` (rows ``id, video_name,
              video_id, question_text, multi_choice, answer (0-based), question_relation,
              question_type``), videos ``data/video/{video_name}.mp4``. Default video folder: the
              first of ``videos/`` or ``video/`` beside the JSON, ``../video/``, ``../videos/``.
``omnibench`` GitHub JSONL (``dataset/*.jsonl``; ``index, task type, audio type, question, options,
              answer (option text), audio_path, image_path``; media basenames under ``mm_data/{audio,
              image}``), or the Hugging Face parquet files (``data/*.parquet``, media bytes embedded
              in ``audio``/``image``; several files are read together). Embedded media are written
              once under ``mm_data_extracted/`` (in ``--media-root`` or beside the first file).
``dailyomni`` ``qa.json`` (``Question, Choice ["A. …"], Answer (letter), video_id, Type,
              video_category, video_duration``), videos ``Videos/{id}/{id}_video.mp4`` (audio from
              ``{id}_audio.wav`` beside it when present). Ids ``{video_id}#{k}`` (k-th question of
              that video in file order) unless a row has ``id``.
``mmar``      ``MMAR-meta.jsonl`` (Feb 2026) or ``MMAR-meta.json`` (May 2025; a folder holding both
              uses the newer): ``id, audio_path (./audio/…), question, choices, answer (option
              text), modality, category, sub-category``. Five May-2025 rows have an answer that is
              not a choice: unscorable under the exact rule, still scored by the official one.
``mmau``      ``mmau-test-mini.json`` (or ``mmau-test.json``): ``id, audio_id (./test-mini-audios/…),
              question, choices, answer (option text), task, difficulty, sub-category``.
``avqa-r1-6k`` EchoInk-R1's valid split as published: ``AVQA_R1/valid/omni_rl_format_valid.json``
              (a JSON list of ``problem_id, problem, options ["A. …"], solution "<answer>X</answer>",
              path {image, audio}``) with ``images/`` and ``audios/`` beside it; read by
              ``corpus.published`` (the training reader), image + audio items.
``manifest``  the project's JSONL (build-avrt's input): ``id, video | image + audio, question,
              choices, answer (letter), question_type``; paths relative to the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus.manifest import lettered_option
from filters.answers import LETTERS
from media.files import atomic_write_bytes


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not follow its published format (message names the row or flag)."""


@dataclass(frozen=True)
class BenchItem:
    """One multiple-choice question of any benchmark, with resolved media paths."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str | None  # gold letter "A", "B", ...; None: the published answer is not an option
    category: str = ""
    video: str | None = None
    image: str | None = None
    audio: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    gold_text: str = ""  # the published answer text (defaults to the gold option's text)

    @property
    def answer_text(self) -> str:
        return self.gold_text or (self.choices[LETTERS.index(self.answer)] if self.answer else "")

    @property
    def scorable(self) -> bool:
        return self.answer is not None

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
                "gold_text": self.answer_text, "category": self.category, "video": self.video,
                "image": self.image, "audio": self.audio, "tags": dict(self.tags)}


# ---------------------------------------------------------------- where --data points

# Published file names per benchmark, searched in order under a folder given as --data.
PUBLISHED_FILES: dict[str, tuple[str, ...]] = {
    "avqa": ("data/annotation/*.json", "annotation/*.json", "*.json"),
    "omnibench": ("data/*.parquet", "*.parquet", "dataset/*.jsonl", "*.jsonl"),
    "dailyomni": ("qa.json", "*/qa.json"),
    "mmar": ("MMAR-meta.jsonl", "MMAR-meta.json"),
    "mmau": ("mmau-test-mini.json", "mmau-test.json"),
    "avqa-r1-6k": ("omni_rl_format_valid.json", "valid/omni_rl_format_valid.json",
                   "AVQA_R1/valid/omni_rl_format_valid.json", "omni_rl_format_*.json"),
    "manifest": ("*.jsonl",),
}


def resolve_data(name: str, data: Path | str | Sequence[Path | str]) -> list[Path]:
    """The annotation file(s) ``--data`` names: files as given, or the published file in a folder.

    Several files are accepted only as parquet parts of one dataset (OmniBench on the Hub)."""
    paths = _paths(data)
    if not paths:
        raise BenchmarkFormatError("--data: no file given")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += _published_in(name, path)
        elif path.exists():
            files.append(path)
        else:
            raise BenchmarkFormatError(f"--data {path}: no such file or folder")
    if len(files) > 1 and not all(f.suffix == ".parquet" for f in files):
        raise BenchmarkFormatError(f"--data names {len(files)} files ({', '.join(f.name for f in files[:4])}); "
                                   f"give one --data file for {name} (several are accepted only as parquet parts)")
    return files


def _published_in(name: str, folder: Path) -> list[Path]:
    for pattern in PUBLISHED_FILES.get(name, ()):
        found = sorted(folder.glob(pattern))
        if found and (len(found) == 1 or pattern.endswith(".parquet")):
            return found
        if found:
            listed = ", ".join(str(f.relative_to(folder)) for f in found[:6])
            raise BenchmarkFormatError(f"--data {folder}: several {name} files ({listed}); give one with "
                                       f"--data {folder / found[0].relative_to(folder)}")
    expected = " or ".join(PUBLISHED_FILES.get(name, ("?",)))
    raise BenchmarkFormatError(f"--data {folder}: no {name} annotation file found (looked for {expected}); "
                               f"give the file with --data PATH")


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
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise BenchmarkFormatError(f"{path.name} line {n}: not JSON ({err.msg})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(f"{path.name}: not JSON ({err.msg} at line {err.lineno})") from None
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


def gold_letter(answer: str, choices: Sequence[str]) -> str | None:
    """Gold letter = index of the answer text among the options (exact, then whitespace/case-folded);
    None when it is not exactly one of them (the item is then unscorable by option)."""
    if list(choices).count(answer) == 1:
        return LETTERS[list(choices).index(answer)]
    folded = [_norm(c) for c in choices]
    if folded.count(_norm(answer)) == 1:
        return LETTERS[folded.index(_norm(answer))]
    return None


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


_MAGIC = ((b"\xff\xd8", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".wav"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"\xff\xf3", ".mp3"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"GIF8", ".gif"))


def _media_name(value: Mapping[str, Any], fallback: str) -> str:
    """A file name for embedded bytes: their recorded ``path``, else ``fallback`` + a sniffed suffix."""
    if value.get("path"):
        return Path(str(value["path"])).name
    data = bytes(value["bytes"][:4])
    suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".bin")
    return fallback + suffix


def _embedded(value: Any, path: str | None, directory: Path, fallback: str) -> str | None:
    """``path`` if it exists; else write embedded bytes (``{"bytes", "path"}``) once under ``directory``."""
    if (path and Path(path).exists()) or not isinstance(value, Mapping) or not value.get("bytes"):
        return path
    target = directory / _media_name(value, fallback)
    if not target.exists():
        atomic_write_bytes(target, bytes(value["bytes"]))
    return str(target)


def strip_letter(option: str, expected: str) -> str:
    """``"A. text"`` / ``"(A) text"`` / ``"A) text"`` -> ``"text"`` when the letter is ``expected``."""
    found = lettered_option(option)
    return found[1] if found and found[0] == expected else option.strip()


def _check(item: BenchItem, where: str) -> BenchItem:
    if not item.question.strip():
        raise BenchmarkFormatError(f"{where}: empty question")
    if not 2 <= len(item.choices) <= len(LETTERS):
        raise BenchmarkFormatError(f"{where}: needs 2 or more options, got {len(item.choices)}")
    if item.answer is not None and item.answer not in LETTERS[: len(item.choices)]:
        raise BenchmarkFormatError(f"{where}: gold {item.answer!r} is not one of the options")
    if not (item.video or item.image or item.audio):
        raise BenchmarkFormatError(f"{where}: no media (video, image or audio)")
    return item


def _unique(items: list[BenchItem], where: str) -> list[BenchItem]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise BenchmarkFormatError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
    return items


def _paths(data: Path | str | Sequence[Path | str]) -> list[Path]:
    return [Path(data)] if isinstance(data, (str, Path)) else [Path(p) for p in data]


def _one(data: Path | str | Sequence[Path | str], name: str) -> Path:
    paths = _paths(data)
    if len(paths) != 1:
        raise BenchmarkFormatError(f"{name} takes one --data file, got {len(paths)}")
    return paths[0]


# ---------------------------------------------------------------- loaders

def _from_pipeline(path: Path, media_root: Path | None, kind: str) -> list[BenchItem]:
    """Manifest, AVQA and AVQA-R1-6K files are training inputs too: one reader (``corpus.published``) reads
    them, in the layout ``kind``."""
    from corpus.manifest import ManifestError
    from corpus.published import load_dataset

    try:
        samples = load_dataset(path, video_dir=media_root, kind=kind).samples
    except ManifestError as err:
        raise BenchmarkFormatError(str(err)) from None
    return [BenchItem(id=s.id, question=s.question, choices=tuple(s.choices), answer=s.answer,
                      category=s.question_type, video=s.video, image=s.image, audio=s.audio,
                      tags={"question_relation": str(s.extra["question_relation"])}
                      if s.extra.get("question_relation") else {})
            for s in samples]


def load_manifest(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """The project's JSONL manifest (also build-avrt's input); paths relative to the manifest."""
    return _from_pipeline(_one(paths, "manifest"), media_root, "manifest")


def load_avqa(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """AVQA annotations; ``media_root`` is the video folder (default: ``corpus.manifest.avqa_video_dir``)."""
    return _from_pipeline(_one(paths, "avqa"), media_root, "avqa")


def load_avqa_r1_6k(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """AVQA-R1-6K's ``omni_rl_format_valid.json``; ``media_root`` is the split folder (default: the file's)."""
    return _from_pipeline(_one(paths, "avqa-r1-6k"), media_root, "avqa-r1-6k")


def _omnibench_rows(path: Path, roots: Sequence[Path], cache: Path) -> list[BenchItem]:
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path.name} row {i + 1}"
        try:
            index = str(row.get("index", i))
            choices = tuple(_list(row["options"]))
            image = _find(row["image_path"], roots, ["mm_data/image", "image", "images", "."]) \
                if row.get("image_path") else None
            audio = _find(row["audio_path"], roots, ["mm_data/audio", "audio", "audios", "."]) \
                if row.get("audio_path") else None
            image = _embedded(row.get("image"), image, cache / "image", index)
            audio = _embedded(row.get("audio"), audio, cache / "audio", index)
            answer = str(row["answer"])
            item = BenchItem(id=index, question=str(row["question"]), choices=choices,
                             answer=gold_letter(answer, choices), gold_text=answer,
                             category=str(row.get("task type") or ""), image=image, audio=audio,
                             tags={"audio type": str(row.get("audio type") or "")})
        except KeyError as err:
            raise BenchmarkFormatError(f"{where}: missing field {err}") from None
        if not (item.image and item.audio):
            raise BenchmarkFormatError(f"{where}: needs an image and an audio (image_path/audio_path or embedded "
                                       "image/audio bytes)")
        items.append(_check(item, where))
    return items


def load_omnibench(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """OmniBench JSONL (media under ``mm_data/`` of its folder or the parent) or Hub parquet part(s)."""
    paths = _paths(paths)
    first = paths[0]
    roots = [Path(media_root)] if media_root else [first.parent, first.parent.parent]
    cache = roots[0] / "mm_data_extracted"
    items = [item for path in paths for item in _omnibench_rows(path, roots, cache)]
    return _unique(items, first.name if len(paths) == 1 else f"{len(paths)} files")


def load_dailyomni(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """Daily-Omni ``qa.json``; ``media_root`` is the ``Videos/`` folder (default beside the file)."""
    path = _one(paths, "dailyomni")
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
    return _unique(items, path.name)


def _load_audio_mc(path: Path, media_root: Path | None, audio_key: str, category_key: str,
                   tag_keys: Sequence[str]) -> list[BenchItem]:
    base = Path(media_root) if media_root else path.parent
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path.name} row {i + 1}"
        try:
            choices = tuple(_list(row["choices"]))
            answer = str(row["answer"])
            item = BenchItem(id=str(row.get("id", i)), question=str(row["question"]), choices=choices,
                             answer=gold_letter(answer, choices), gold_text=answer,
                             category=str(row.get(category_key) or ""), audio=_resolve(base, row[audio_key]),
                             tags={k: str(row[k]) for k in tag_keys if row.get(k)})
        except KeyError as err:
            raise BenchmarkFormatError(f"{where}: missing field {err}") from None
        items.append(_check(item, where))
    return _unique(items, path.name)


def load_mmar(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """MMAR-meta.json(l); ``audio_path`` (``./audio/x.wav``) relative to ``media_root`` or the file."""
    return _load_audio_mc(_one(paths, "mmar"), media_root, "audio_path", "category", ["modality", "sub-category"])


def load_mmau(paths: Path | Sequence[Path], media_root: Path | None = None) -> list[BenchItem]:
    """MMAU test(-mini) JSON; ``audio_id`` relative to ``media_root`` or the file."""
    return _load_audio_mc(_one(paths, "mmau"), media_root, "audio_id", "task", ["difficulty", "sub-category"])


LOADERS: dict[str, Callable[[Sequence[Path], Path | None], list[BenchItem]]] = {
    "avqa": load_avqa,
    "omnibench": load_omnibench,
    "dailyomni": load_dailyomni,
    "mmar": load_mmar,
    "mmau": load_mmau,
    "avqa-r1-6k": load_avqa_r1_6k,
    "manifest": load_manifest,
}

# What --media-root means per benchmark (named in error messages).
MEDIA_ROOT_HELP = {
    "avqa": "the folder holding {video_name}.mp4 (the repository's data/video)",
    "omnibench": "the folder holding mm_data/",
    "dailyomni": "the Videos/ folder",
    "mmar": "the folder the audio_path values (./audio/...) are relative to",
    "mmau": "the folder the audio_id values (./test-mini-audios/...) are relative to",
    "avqa-r1-6k": "the split folder holding images/ and audios/ (AVQA_R1/valid)",
    "manifest": "the folder the media paths are relative to",
}


def load_benchmark(name: str, data: Path | str | Sequence[Path | str],
                   media_root: Path | str | None = None) -> list[BenchItem]:
    """Items of benchmark ``name`` from ``--data`` (file, folder, or parquet parts)."""
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[name](resolve_data(name, data), Path(media_root) if media_root else None)


def check_media_found(name: str, items: list[BenchItem]) -> list[tuple[str, str]]:
    """Stop with the flag to give when no item's media exist; return the missing ones otherwise."""
    from corpus.manifest import missing_media, no_media_found

    if problem := no_media_found(items, f"{name} items"):
        raise BenchmarkFormatError(f"{problem}; give --media-root DIR: {MEDIA_ROOT_HELP[name]}")
    return missing_media(items)
