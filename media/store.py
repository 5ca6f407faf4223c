"""Extracted media, stored once per content: ``ROOT/media/<k[:2]>/<k>/`` holds a sample's JPEG frames,
``audio.wav`` and ``meta.json`` (or a ``meta.json`` with the reason it could not be extracted), where
``k`` digests the source files' bytes and the extraction settings.

Samples on one clip in this process extract it once (a lock per key); across processes and Dask
workers a folder appears complete or not at all (``publish_dir``). Corpus paths are relative to the
output folder, so a store outside it is linked in (hard links, else copies).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from media.extract import MediaError, MediaSettings, load_clip
from media.files import content_key, digest_bytes, digest_file, jpeg_bytes, publish_dir, wav_bytes

Signature = tuple[str, int, int]  # a file's path, size and mtime (ns)


def _signature(path: str) -> Signature:
    stat = os.stat(path)
    return str(path), stat.st_size, stat.st_mtime_ns


class MediaStore:
    """``get(video | image + audio | audio)`` -> the sample's media meta, with paths relative to ``outdir``
    (an audio file alone gives no frames)."""

    def __init__(self, root: Path, outdir: Path, settings: MediaSettings):
        self.root, self.outdir, self.settings = Path(root), Path(outdir), settings
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # Per process, for clips asked about many times (AVQA: several questions per video): a source
        # file's digest, and the finished meta of a set of sources, while their sizes and mtimes stay.
        self._digests: dict[Signature, str] = {}
        self._done: dict[tuple[Signature, ...], dict[str, Any]] = {}

    def recall(self, video: str | None = None, image: str | None = None, audio: str | None = None) -> dict[str, Any] | None:
        """The meta ``get`` returned for these unchanged files earlier in this process, else None
        (no reading, hashing or locking: cheap enough for the event loop)."""
        try:
            return self._done.get(tuple(_signature(p) for p in (video, image, audio) if p))
        except OSError:
            return None

    def get(self, video: str | None = None, image: str | None = None, audio: str | None = None) -> tuple[dict[str, Any], bool]:
        """``(meta, extracted_now)``; raises MediaError for unusable media (also when cached)."""
        sources = [p for p in (video, image, audio) if p]
        try:
            signatures = tuple(_signature(p) for p in sources)
        except FileNotFoundError as err:
            raise MediaError(f"file not found: {err.filename}") from None
        if signatures in self._done:
            return self._done[signatures], False
        kind = "video" if video else "image+audio" if image else "audio"
        key = content_key(kind=kind, settings=self.settings.model_dump(),
                          sources=[self._digest(s) for s in signatures])
        directory = self.root / "media" / key[:2] / key
        extracted = False
        with self._lock_for(key):
            meta = _read_meta(directory)
            if meta is None:
                extracted = True
                publish_dir(directory, lambda tmp: self._extract(tmp, video, image, audio))
                meta = _read_meta(directory)
                if meta is None:
                    raise MediaError(f"media cache folder vanished: {directory}")
        if "error" in meta:
            raise MediaError(meta["error"])
        rel = os.path.relpath(self._within_outdir(directory, key), self.outdir)
        meta = {**meta, "key": key, "frames": [f"{rel}/{name}" for name in meta["frames"]], "audio": f"{rel}/{meta['audio']}"}
        self._done[signatures] = meta
        return meta, extracted

    def _digest(self, signature: Signature) -> str:
        if signature not in self._digests:
            self._digests[signature] = digest_file(signature[0])
        return self._digests[signature]

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _extract(self, directory: Path, video: str | None, image: str | None, audio: str | None) -> None:
        """Write the frames, the audio and ``meta.json`` (or a ``meta.json`` with the error) into ``directory``."""
        settings = self.settings
        clip = load_clip(video, image, audio, settings, all_or_nothing=True)
        if clip.error():
            (directory / "meta.json").write_text(json.dumps({"error": clip.error()}))
            return
        frames = clip.frames if clip.frames is not None else []  # an audio file alone has none
        jpegs = [jpeg_bytes(f, settings.jpeg_quality) for f in frames]
        wav = wav_bytes(clip.audio, settings.sample_rate)
        names = [f"frame_{i:02d}.jpg" for i in range(len(jpegs))]
        for name, data in zip(names, jpegs):
            (directory / name).write_bytes(data)
        (directory / "audio.wav").write_bytes(wav)
        meta = {"frames": names, "audio": "audio.wav", "frame_times": [float(t) for t in clip.frame_times],
                "duration": float(clip.duration), "audio_seconds": len(clip.audio) / settings.sample_rate,
                "frame_sha256": [digest_bytes(j) for j in jpegs], "audio_sha256": digest_bytes(wav),
                "width": int(clip.frames.shape[2]) if jpegs else 0, "height": int(clip.frames.shape[1]) if jpegs else 0}
        (directory / "meta.json").write_text(json.dumps(meta))

    def _within_outdir(self, directory: Path, key: str) -> Path:
        """The folder itself when the store is inside ``outdir``, else a linked copy under ``outdir/media``."""
        try:
            directory.resolve().relative_to(self.outdir.resolve())
            return directory
        except ValueError:
            pass
        local = self.outdir / "media" / key[:2] / key
        if not (local / "meta.json").exists():
            with self._lock_for("out:" + key):
                if not (local / "meta.json").exists():
                    publish_dir(local, lambda tmp: _link_all(directory, tmp))
        return local


def _read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "meta.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _link_all(source: Path, target: Path) -> None:
    """Hard-link (or copy, across file systems) every file of ``source`` into the empty ``target``."""
    for item in source.iterdir():
        try:
            os.link(item, target / item.name)
        except OSError:
            shutil.copy2(item, target / item.name)
