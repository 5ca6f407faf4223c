"""Reading and writing extracted media (JPEG frames, 16-bit WAV audio), atomically."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from media.extract import SAMPLE_RATE


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``: a killed process leaves
    the whole file or none. The temporary name is unique per process and thread.

    No fsync: it protects against power loss, not process kills, and cost ~20% of the pipeline's
    time; readers treat a file torn by a machine crash as absent (see ``flows.cache.Cache.get``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def jpeg_bytes(frame: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def save_frames(frames: np.ndarray, directory: Path, quality: int = 90) -> list[Path]:
    paths = [directory / f"frame_{i:02d}.jpg" for i in range(len(frames))]
    for frame, path in zip(frames, paths):
        atomic_write_bytes(path, jpeg_bytes(frame, quality))
    return paths


def save_audio(samples: np.ndarray, path: Path, sample_rate: int = SAMPLE_RATE) -> Path:
    atomic_write_bytes(path, wav_bytes(samples, sample_rate))
    return path


def load_frames(paths: Sequence[str | Path]) -> list[Image.Image]:
    """Load frames as RGB PIL images, in order."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load a WAV as mono float32 at ``sample_rate`` (resampled with librosa if needed)."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != sample_rate:
        import librosa

        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)
