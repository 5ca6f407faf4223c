"""The corpus's rows: one per sample, *kept* (in ``corpus/``) or *rejected* (in ``rejected/``, with the
stage that dropped it and why). build-avrt writes them; statistics, the dataset card, the viewer,
the trainer and evaluation's difficulty lookup read them. Column names live here and nowhere else.

A row's columns, in the order a sample earns them (``total=False``: a row dropped early lacks the
later ones):
"""

from __future__ import annotations

from typing import Literal, TypedDict

Status = Literal["kept", "rejected"]
# Where a sample can be dropped, in pipeline order (the funnel's stages).
STAGES = ("manifest", "media", "vision_teacher", "audio_teacher", "filter", "merger")
ROLES = ("vision", "audio", "merger")


class SampleColumns(TypedDict):
    id: str
    split: str
    question: str
    choices: list[str]
    answer: str  # the gold letter
    question_type: str | None
    source: str  # the video, or "IMAGE + AUDIO"


class MediaColumns(TypedDict):
    frames: list[str]  # JPEG paths relative to the output folder
    frame_times: list[float]  # seconds
    audio: str  # 16 kHz mono WAV path relative to the output folder
    duration: float
    resolution: str  # "WIDTHxHEIGHT"


class TeacherColumns(TypedDict):
    vision_raw: str  # the answer text (reasoning split off)
    vision_reasoning: str
    vision_answer: str | None  # the option the parser read, None when it read none
    vision_parse: str  # where the parser read it, or why it read none
    audio_raw: str
    audio_reasoning: str
    audio_answer: str | None
    audio_parse: str


class MergeColumns(TypedDict):
    merged: str  # <think>…</think><answer>X</answer>
    merger_kind: Literal["llm", "concat"]
    merger_attempts: int


class ProvenanceColumns(TypedDict):
    vision_model: str
    vision_prompt_sha256: str
    vision_sampling: str  # JSON
    audio_model: str
    audio_prompt_sha256: str
    audio_sampling: str
    merger_model: str  # "concat" for the deterministic merger
    merger_prompt_sha256: str
    merger_sampling: str


class DecisionColumns(TypedDict):
    status: Status
    stage: str  # one of STAGES, or "kept"
    reason: str  # "" when kept


class Row(SampleColumns, MediaColumns, TeacherColumns, MergeColumns, ProvenanceColumns, DecisionColumns,
          total=False):
    """A decided sample as the pipeline journals it."""


# Columns of the pipeline's bookkeeping: in rejected/ (they say why), not in corpus/.
INTERNAL_COLUMNS = ("status", "stage", "reason", "vision_parse", "audio_parse")
TARGET = "merged"  # what the student learns to write
