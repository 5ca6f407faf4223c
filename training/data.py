"""The trainer's data: build-avrt's corpus, or a dataset as its authors published it, as rows.

``data.path`` (``--data``) is one of:

* a build-avrt output folder: its ``corpus/*.parquet`` rows (frames and audio already extracted; the
  merged traces SFT needs);
* a build-questions output folder (its ``manifest.jsonl``), or any dataset ``corpus.published`` reads
  as published: an AVQA-R1-6K split folder, R1-AQA's AVQA JSONL, AVQA's annotation JSON (audio from
  the videos), ARC-Easy (text only), a project manifest. Their rows name media files (``video``,
  ``image``, ``audio``: columns ``video_file``…) that ``MediaLoader`` decodes when a row is used, by the pipeline's own loader.

Rows that cannot be used are listed with their reasons and stop the run, or, with
``data.skip_invalid``, are left out (the listing stays). Published data has no traces: GRPO only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from configs import UserError
from corpus.manifest import InvalidRow, ManifestError, missing_media, no_media_found
from corpus.published import dataset_kind, read_dataset
from corpus.store import read_frame
from media import load_clip
from media.files import cap_pixels
from student.inputs import PROMPT_NAME, StudentSample, load_corpus_sample
from training.train_config import DataConfig, TrainConfig

CORPUS_COLUMNS = ("id", "question", "choices", "answer", "frames", "audio")
MEDIA_FIELDS = ("video", "image", "audio")
# a published row's media files, under names TRL does not read as its own inputs (it takes `image`)
MEDIA_COLUMNS = {name: f"{name}_file" for name in MEDIA_FIELDS}


@dataclass
class TrainingRows:
    """What ``data.path`` gave: the rows to train on, the rows left out (with reasons), and its kind."""

    frame: pd.DataFrame
    kind: str  # "build-avrt corpus", or corpus.published's name of the layout
    rejected: list[InvalidRow] = field(default_factory=list)


def is_corpus_folder(path: Path) -> bool:
    """A build-avrt output folder (it holds ``corpus/``)."""
    return (path / "corpus").is_dir()


def published_file(path: Path) -> Path:
    """A build-questions output folder is read through its ``manifest.jsonl``; anything else as given."""
    return path / "manifest.jsonl" if path.is_dir() and (path / "manifest.jsonl").is_file() else path


def load_rows(data: DataConfig, extra_columns: tuple[str, ...] = ()) -> TrainingRows:
    """The rows of ``data.path`` for ``data.split`` (the first ``data.max_samples``); a path that gives
    none, or rows that cannot be used without ``data.skip_invalid``, is a ``UserError`` saying why."""
    path = Path(data.path)
    if is_corpus_folder(path) or not path.exists():
        return TrainingRows(load_corpus(path, data, extra_columns), "build-avrt corpus")
    if extra_columns:
        raise UserError(f"--data {path}: a published dataset has no {', '.join(extra_columns)} column (SFT trains on "
                        "build-avrt's merged traces): give a build-avrt output folder, or run GRPO only (--stages grpo)")
    source = published_file(path)
    reading = read_dataset(source, limit=data.max_samples, split=data.split)
    needed = [name for name, wanted in (("video", data.vision or data.audio), ("image", data.vision),
                                        ("audio", data.audio)) if wanted]
    used = [_only(sample, needed) for sample in reading.samples]  # the files this run reads
    if problem := no_media_found(used, "rows"):  # a wrong folder, not missing files: said once
        raise UserError(f"--data {source}: {problem}")
    samples, rejected = [], list(reading.invalid)
    for sample in used:
        missing = missing_media([sample])
        if missing:
            rejected.append(InvalidRow("media", f"file not found: {missing[0][1]}", sample.id, sample.split))
        else:
            samples.append(sample)
    total = len(samples) + len(rejected)
    if rejected and not data.skip_invalid:
        raise UserError(f"{ManifestError.from_rows(source, rejected, total)}\n(--skip-invalid, or data.skip_invalid=true: "
                        "train on the others)")
    if not samples:
        raise UserError(f"--data {source}: none of its {total} rows can be used")
    rows = [{"id": s.id, "question": s.question, "choices": list(s.choices), "answer": s.answer, "split": s.split,
             **{column: getattr(s, name) for name, column in MEDIA_COLUMNS.items()}} for s in samples]  # used media only
    return TrainingRows(pd.DataFrame(rows), dataset_kind(source), rejected)


def _only(sample: Any, fields: list[str]) -> Any:
    """``sample`` with only the media ``fields`` kept (for checking the files a run will read)."""
    return replace(sample, **{name: None for name in MEDIA_FIELDS if name not in fields})


def load_corpus(corpus: str | Path, data: DataConfig, extra_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows of ``corpus/corpus/*.parquet`` (build-avrt's format) for ``data.split``; a corpus that cannot
    be used is a ``UserError`` naming what to change."""
    frame = read_frame(Path(corpus))
    if frame.empty:
        raise UserError(no_rows_message(Path(corpus)))
    missing = [c for c in (*CORPUS_COLUMNS, *extra_columns) if c not in frame.columns]
    if missing:
        raise UserError(f"--data {corpus}: its rows lack columns {missing} (not a build-avrt corpus)")
    if "split" in frame.columns and data.split:
        frame = frame[frame["split"] == data.split]
    if data.max_samples is not None:
        frame = frame.head(data.max_samples)
    if frame.empty:
        raise UserError(f"--data {corpus}: no kept rows for split {data.split!r} (set data.split)")
    frame = frame.reset_index(drop=True)
    for column in ("choices", "frames"):
        frame[column] = frame[column].map(lambda v: [str(x) for x in v] if v is not None else [])
    return frame


def no_rows_message(corpus: Path) -> str:
    """Why a build-avrt output folder gives no kept rows, and what to give instead."""
    if not corpus.exists():
        return f"--data {corpus}: no such file or folder (give a build-avrt --out folder or a published dataset)"
    if any(corpus.glob("*.parquet")):
        return f"--data {corpus}: holds parquet files itself; give the build-avrt output folder above it"
    return (f"--data {corpus}: no kept rows under {corpus / 'corpus'} (give the --out folder of a build-avrt "
            "run that kept rows)")


class MediaLoader:
    """A row as the ``StudentSample`` the student sees: the configured modalities and dropout, the
    recipe's prompt, corpus rows' extracted media or a published row's files decoded."""

    def __init__(self, root: str | Path, data: DataConfig, seed: int = 0, prompt: str = PROMPT_NAME):
        self.root, self.data, self.prompt = Path(root), data, prompt
        self.rng = random.Random(seed)

    def __call__(self, row: dict[str, Any]) -> StudentSample:
        vision, audio = self.data.vision, self.data.audio
        p = self.data.modality_dropout
        if p > 0 and vision and audio:
            draw = self.rng.random()
            vision, audio = (False, True) if draw < p else (True, False) if draw < 2 * p else (True, True)
        if "frames" in row:
            sample = load_corpus_sample(row, self.root, vision=vision, audio=audio)
        else:
            sample = self._published(row, vision, audio)
        if sample.frames and not sample.frames_are_video:
            sample.frames = [cap_pixels(f, self.data.image_max_pixels) for f in sample.frames]
        sample.prompt = self.prompt
        return sample

    @staticmethod
    def _published(row: dict[str, Any], vision: bool, audio: bool) -> StudentSample:
        """A published row's files, decoded as the pipeline decodes them (8 frames, 10 s of 16 kHz audio)."""
        video, image, sound = (row.get(MEDIA_COLUMNS[name]) for name in MEDIA_FIELDS)
        want_frames = vision and bool(video or image)
        want_audio = audio and bool(sound or video)
        clip = load_clip(video, image, sound, want_frames=want_frames, want_audio=want_audio)
        problem = (want_frames and clip.frames_error) or (want_audio and clip.audio_error)
        if problem:
            raise UserError(f"row {row['id']!r}: {problem} ({video or image or sound})")
        frames = [Image.fromarray(f) for f in clip.frames] if want_frames and clip.frames is not None else None
        return StudentSample(question=str(row["question"]), choices=[str(c) for c in row["choices"]], frames=frames,
                             audio=clip.audio if want_audio else None, frames_are_video=clip.frames_are_video,
                             duration=clip.duration if video else None)


def media_loader(config: TrainConfig) -> MediaLoader:
    """The run's ``MediaLoader``: its data, modality dropout seeded by the run's seed, its prompt."""
    return MediaLoader(config.data.path, config.data, config.seed, config.prompt)
