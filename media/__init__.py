"""Media handling shared by the data pipeline, the trainer and evaluation.

One place decides which frames and which seconds of audio a model sees, so the teachers, the
student during training and the student during evaluation all get the same inputs.
"""

from media.extract import (
    AUDIO_SECONDS,
    NUM_FRAMES,
    SAMPLE_RATE,
    ClipMedia,
    MediaError,
    MediaSettings,
    audio_window,
    extract_audio,
    extract_frames,
    frame_timestamps,
    load_clip,
    probe,
)
from media.files import load_audio, load_frames, save_audio, save_frames

__all__ = [
    "AUDIO_SECONDS",
    "NUM_FRAMES",
    "SAMPLE_RATE",
    "ClipMedia",
    "MediaError",
    "MediaSettings",
    "audio_window",
    "extract_audio",
    "extract_frames",
    "frame_timestamps",
    "load_audio",
    "load_clip",
    "load_frames",
    "probe",
    "save_audio",
    "save_frames",
]
