"""Frame and audio extraction from a video (or an image + audio pair).

Conventions (the same for teachers, training and evaluation):

* **Frames**: ``num_frames`` (default 8) frames at the *centres* of ``num_frames`` equal segments of
  the video, i.e. at ``t_i = (i + 0.5) * duration / num_frames`` for ``i = 0..num_frames-1``. For a
  10 s clip that is 0.625 s, 1.875 s, ... 9.375 s. Centres avoid the black first frame and the often
  truncated last frame; a video with fewer frames than asked repeats frames.
* **Audio**: ``audio_seconds`` (default 10) of mono audio at 16 kHz, from the window centred on the
  middle of the clip (``start = max(0, (duration - 10) / 2)``); AVQA clips are 10 s long so this is
  the whole clip. Shorter clips are returned as they are, never padded with silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from pydantic import BaseModel, ConfigDict

NUM_FRAMES = 8
AUDIO_SECONDS = 10.0
SAMPLE_RATE = 16_000


class MediaError(Exception):
    """A clip that cannot give the frames or audio asked for; ``reason`` is human-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MediaSettings(BaseModel):
    """Everything that determines the extracted media (part of the media cache key); the one media
    settings type of the pipeline config, the trainer's inputs and evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int = NUM_FRAMES
    audio_seconds: float = AUDIO_SECONDS
    sample_rate: int = SAMPLE_RATE
    max_side: int = 1280  # frames larger than this are downscaled (AVQA's 1280x720 is kept as is)
    jpeg_quality: int = 90


def probe(path: str | Path) -> dict[str, Any]:
    """Return ``{"duration", "has_video", "has_audio", "width", "height"}`` or raise MediaError."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"empty file: {path}")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as err:
        tail = (err.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise MediaError(f"unreadable media ({tail[0] if tail else 'ffprobe failed'})") from None
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    duration = _duration(info, video + audio)
    return {
        "duration": duration,
        "has_video": bool(video),
        "has_audio": bool(audio),
        "width": int(video[0]["width"]) if video else None,
        "height": int(video[0]["height"]) if video else None,
    }


def _is_cover_art(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _duration(info: dict[str, Any], streams: list[dict[str, Any]]) -> float:
    candidates = [info.get("format", {}).get("duration")] + [s.get("duration") for s in streams]
    for value in candidates:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return 0.0


def frame_timestamps(duration: float, num_frames: int = NUM_FRAMES) -> list[float]:
    """Segment centres: ``(i + 0.5) * duration / num_frames`` seconds."""
    return [(i + 0.5) * duration / num_frames for i in range(num_frames)]


def frame_indices(total_frames: int, num_frames: int = NUM_FRAMES) -> list[int]:
    """Frame indices at segment centres over ``total_frames`` decoded frames."""
    if total_frames <= 0:
        raise MediaError("video stream has no frames")
    return [min(total_frames - 1, int((i + 0.5) * total_frames / num_frames)) for i in range(num_frames)]


def audio_window(duration: float, seconds: float = AUDIO_SECONDS) -> tuple[float, float]:
    """``(start, length)`` of the audio window: centred, at most ``seconds`` long."""
    length = min(seconds, duration) if duration > 0 else seconds
    return max(0.0, (duration - length) / 2.0), length


def extract_frames(path: str | Path, settings: MediaSettings = MediaSettings(),
                   info: dict[str, Any] | None = None) -> tuple[np.ndarray, list[float]]:
    """Return ``(frames uint8 [N, H, W, 3], timestamps in seconds)``.

    Decodes with decord (seek + decode only the chosen frames); falls back to ffmpeg for the rare
    container decord cannot open. Raises MediaError for a missing or undecodable video stream.
    ``info`` is ``probe(path)`` when the caller already has it (saves an ffprobe run).
    """
    info = info or probe(path)
    if not info["has_video"]:
        raise MediaError("no video stream")
    try:
        frames, times = _frames_decord(path, settings.num_frames)
    except MediaError:
        raise
    except Exception:  # decord raises bare RuntimeError/DECORDError on odd containers
        frames, times = _frames_ffmpeg(path, info, settings.num_frames)
    return _downscale(frames, settings.max_side), times


def _frames_decord(path: str | Path, num_frames: int) -> tuple[np.ndarray, list[float]]:
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    indices = frame_indices(len(reader), num_frames)
    frames = reader.get_batch(indices).asnumpy()
    fps = reader.get_avg_fps() or 1.0
    return frames, [round(i / fps, 3) for i in indices]


def _frames_ffmpeg(path: str | Path, info: dict[str, Any], num_frames: int) -> tuple[np.ndarray, list[float]]:
    duration = info["duration"]
    if duration <= 0:
        raise MediaError("video has no duration")
    times = frame_timestamps(duration, num_frames)
    frames = []
    for t in times:
        try:
            out, _ = (
                ffmpeg.input(str(path), ss=t)
                .output("pipe:", vframes=1, format="rawvideo", pix_fmt="rgb24")
                .run(capture_stdout=True, capture_stderr=True)
            )
        except ffmpeg.Error:
            raise MediaError("video stream could not be decoded") from None
        frames.append(out)
    width, height = info["width"], info["height"]
    if any(len(f) != width * height * 3 for f in frames):
        raise MediaError("video stream could not be decoded")
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames]), times


def _downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    if max(height, width) <= max_side:
        return frames
    from PIL import Image

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in frames])


def extract_audio(path: str | Path, settings: MediaSettings = MediaSettings(),
                  info: dict[str, Any] | None = None) -> np.ndarray:
    """Return mono float32 samples at ``settings.sample_rate`` from the centred audio window.

    ``info`` is ``probe(path)`` when the caller already has it (saves an ffprobe run).
    """
    info = info or probe(path)
    if not info["has_audio"]:
        raise MediaError("no audio track")
    start, length = audio_window(info["duration"], settings.audio_seconds)
    try:
        out, _ = (
            ffmpeg.input(str(path), ss=start, t=length)
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=settings.sample_rate, vn=None)
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error:
        raise MediaError("audio track could not be decoded") from None
    samples = np.frombuffer(out, np.float32).copy()
    if samples.size == 0:
        raise MediaError("audio track is empty")
    return samples


@dataclass
class ClipMedia:
    """What one sample's model sees: frames (N, H, W, 3 uint8; a still image is one frame) and mono
    audio, each None with its ``*_error`` reason when it could not be had."""

    frames: np.ndarray | None = None
    frame_times: list[float] = field(default_factory=list)
    frames_are_video: bool = True
    audio: np.ndarray | None = None
    duration: float | None = None
    frames_error: str | None = None
    audio_error: str | None = None

    def error(self) -> str | None:
        """The first missing part's reason (frames first), or None when both are there."""
        return self.frames_error or self.audio_error


def load_clip(video: str | Path | None = None, image: str | Path | None = None, audio: str | Path | None = None,
              settings: MediaSettings = MediaSettings(), want_frames: bool = True, want_audio: bool = True,
              all_or_nothing: bool = False) -> ClipMedia:
    """The one media loader of the pipeline and evaluation: a video (frames and its audio track, probed
    once) or an image + audio pair, by the conventions above. ``all_or_nothing`` stops at the first
    missing part (the pipeline needs both; a clip without sound is not worth decoding frames for)."""
    clip = ClipMedia()
    info: dict[str, Any] | None = None
    if video is not None:
        try:
            info = probe(video)
        except MediaError as err:
            clip.frames_error = clip.audio_error = err.reason
            return clip
        clip.duration = float(info["duration"]) or None
        if all_or_nothing and want_audio and want_frames and info["has_video"] and not info["has_audio"]:
            clip.audio_error = "no audio track"
            return clip
    if want_frames and video is not None:
        try:
            clip.frames, clip.frame_times = extract_frames(video, settings, info)
        except MediaError as err:
            clip.frames_error = err.reason
    elif want_frames and image is not None:
        clip.frames_are_video, clip.frame_times = False, [0.0]
        try:
            from PIL import Image

            with Image.open(image) as opened:
                clip.frames = np.asarray(opened.convert("RGB"))[None]
        except FileNotFoundError:
            clip.frames_error = f"file not found: {image}"
        except Exception:  # PIL raises many kinds for a file that is not an image
            clip.frames_error = "unreadable image"
    if all_or_nothing and clip.frames_error:
        return clip
    source = audio if audio is not None else video
    if want_audio and source is not None:
        try:
            clip.audio = extract_audio(source, settings, info if source is video else None)
            if clip.duration is None:
                clip.duration = len(clip.audio) / settings.sample_rate
        except MediaError as err:
            clip.audio_error = err.reason
    return clip
