"""Reading and writing extracted media (JPEG frames, 16-bit WAV audio), atomically.

Every file the pipeline writes goes through ``atomic_write_bytes`` and every folder that must appear
complete through ``publish_dir``: both build under a temporary name unique to the host, process and
thread (``.{name}.{host}.{pid}.{thread}.tmp``) and rename into place, so readers in any thread,
process or Dask worker see a whole file or folder or none. ``remove_stale_temp`` deletes what
killed writers left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from media.extract import SAMPLE_RATE

HOST = socket.gethostname().replace(".", "-") or "host"
STALE_AFTER_S = 24 * 3600  # temporary entries of other hosts (or unknown writers) older than this are removed


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: str | Path, chunk: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def content_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, no whitespace): the key of a cached
    result is a digest of exactly what determines it."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def temp_path(path: Path) -> Path:
    """A sibling of ``path`` no other thread, process or host uses."""
    return path.with_name(_temp_name(path.name))


def _temp_name(name: str) -> str:
    return f".{name}.{HOST}.{os.getpid()}.{threading.get_ident()}.tmp"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temporary file and ``os.replace``: a killed process
    leaves the whole file or none. The folder is made when missing.

    No fsync: it protects against power loss, not process kills, and cost ~20% of the pipeline's
    time; readers treat a file torn by a machine crash as absent (see ``teachers.calls.CallCache.get``).
    Plain ``os`` calls on string paths: the call cache writes one file per model call.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, _temp_name(name))
    try:
        handle = open(tmp, "wb")
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        handle = open(tmp, "wb")
    try:
        with handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def publish_dir(target: Path, fill: Callable[[Path], None]) -> bool:
    """Make folder ``target`` appear complete or not at all: ``fill(tmp)`` writes into a temporary
    sibling, which is then renamed to ``target``. Returns False when another writer published
    ``target`` first (its folder is kept, ours discarded); a leftover folder without ``meta.json``
    (written by versions that filled ``target`` in place) is replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        for _ in range(2):
            try:
                os.rename(tmp, target)
                return True
            except OSError:
                if (target / "meta.json").exists():
                    return False
                _discard(target)  # an incomplete folder from an older version: replace it
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder: Path) -> None:
    aside = temp_path(folder.with_name(folder.name + "-discarded"))
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(name: str, age_s: float) -> bool:
    """Whether a ``.….tmp`` entry was left by a dead writer: one of this host's dead processes, or
    anything older than ``STALE_AFTER_S`` (other hosts, older naming schemes)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    parts = name.split(".")
    if len(parts) >= 6 and parts[-4] == HOST and parts[-3].isdigit():
        return not _pid_alive(int(parts[-3]))
    return age_s > STALE_AFTER_S


def remove_stale_temp(root: Path) -> int:
    """Delete stale temporary files and folders under ``root`` (see ``is_stale_temp``); returns how many."""
    removed, now = 0, time.time()
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            path = Path(folder) / name
            try:
                if not is_stale_temp(name, now - path.lstat().st_mtime):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    dirs.remove(name)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
            except OSError:
                continue
    return removed


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


def lossless_clip(frames: Sequence[Image.Image], audio: np.ndarray, fps: float,
                  sample_rate: int = SAMPLE_RATE) -> bytes:
    """A Matroska clip of exactly these frames (FFV1, lossless RGB) at ``fps`` with this audio as
    32-bit float PCM: a video decoder reads back the same pixels and samples, bit for bit."""
    import subprocess
    import tempfile

    video = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    height, width = video.shape[1:3]
    with tempfile.TemporaryDirectory(prefix="avrt-clip-") as tmp:
        raw_video, raw_audio, out = Path(tmp, "v.rgb"), Path(tmp, "a.f32"), Path(tmp, "clip.mkv")
        raw_video.write_bytes(np.ascontiguousarray(video, dtype=np.uint8).tobytes())
        raw_audio.write_bytes(np.ascontiguousarray(audio, dtype="<f4").tobytes())
        command = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", f"{fps:.6f}",
                   "-i", str(raw_video), "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", str(raw_audio),
                   "-c:v", "ffv1", "-pix_fmt", "bgr0", "-c:a", "pcm_f32le", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not write the clip: {done.stderr.strip()[-300:]}")
        return out.read_bytes()


def cap_pixels(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """``image`` resized (aspect kept) to at most ``max_pixels`` pixels; as it is when smaller or no cap."""
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    return image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.BICUBIC)


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
