"""The evaluator's OpenAI-API backend: the student's exact input, sent to a model behind a server.

``OpenAIGenerator`` turns each ``training.student.StudentSample`` into one chat request with the
same prompt text (``training.student.student_prompt``), the same system turn and the same media, in
the same order as the local backend's chat template (media parts, then the text):

* the 8 frames as **one video**: a ``video_url`` part holding the frames as comma-separated base64
  JPEGs (``data:video/jpeg;base64,…``, vLLM's frame-list video format), the JPEG bytes the local
  backend decoded, so both see the same pixels;
* a still image (OmniBench) as an ``image_url`` PNG (lossless: the pixels the local backend used);
* the audio as an ``input_audio`` WAV of 32-bit floats (the local samples, not re-quantised).

That is the ``separate`` layout (the audio after the video, not inside it). ``api_messages(…,
layout="aligned")`` builds the trainer's ``aligned`` layout instead (used by GRPO's vLLM rollouts,
``training.rollout``): the frames and the audio as one lossless video file, with
``processor_kwargs(…, layout="aligned")``. With ``mm_processor_kwargs`` on
(``--mm-processor-kwargs``; vLLM started with ``--trust-request-mm-kwargs``) each request also carries
the frame size, video ``fps`` and per-frame pixel cap the local backend gives the processor (``training.student.frame_kwargs``,
read from a local copy of the served model's processor), so vLLM makes the same media tokens and time
positions; without it vLLM uses the Omni processor's default size and 2 fps.

Greedy is ``temperature 0``; the multimodal special tokens that the local backend suppresses are
suppressed with ``logit_bias`` -100 when a local tokenizer is given. Requests go through the
project's teacher client (``teachers.client``: retries with backoff, bound on requests in flight)
via one adapter function, ``_chat_via_teacher_client``. A request that fails for good becomes that
sample's error (an ``Exception`` in place of its text), never the run's.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from evaluation.config import Decoding, ServerConfig
from media import SAMPLE_RATE
from media.files import jpeg_bytes, lossless_clip

TEMPORAL_PATCH = 2  # frames per video grid in Qwen2.5-Omni's vision encoder
JPEG_KEY = "avrt_jpeg"  # Image.info key: the JPEG bytes a frame was decoded from (evaluation.evaluate)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def frame_jpeg(frame: Image.Image) -> bytes:
    """The JPEG bytes a frame was decoded from, else a fresh high-quality encoding."""
    data = frame.info.get(JPEG_KEY)
    return data if isinstance(data, bytes) else jpeg_bytes(np.asarray(frame.convert("RGB")), 95)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def float_wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A WAV of 32-bit floats: the exact samples (16-bit PCM would re-quantise them)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def api_messages(sample: Any, system: str | None = None, layout: str = "separate") -> list[dict[str, Any]]:
    """The OpenAI chat messages for one ``StudentSample`` (layout of ``student_messages``).

    ``layout="aligned"`` (a clip whose audio covers it, ``training.student.is_aligned``): one
    ``video_url`` part, a lossless Matroska clip of the frames with the audio as its sound track
    (``media.files.lossless_clip``), to be sent with ``layout_kwargs``: vLLM then takes the audio
    from the video and interleaves it with the frames as the local aligned layout does.
    """
    from training.student import is_aligned, student_prompt, video_fps

    content: list[dict[str, Any]] = []
    aligned = is_aligned(sample, layout)
    if aligned:
        clip = lossless_clip(sample.frames, sample.audio, video_fps(sample))
        content.append({"type": "video_url", "video_url": {"url": "data:video/x-matroska;base64," + _b64(clip)}})
    elif sample.frames:
        if sample.frames_are_video:
            frames = ",".join(_b64(frame_jpeg(f)) for f in sample.frames)
            content.append({"type": "video_url", "video_url": {"url": f"data:video/jpeg;base64,{frames}"}})
        else:
            content.extend({"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(png_bytes(f))}}
                           for f in sample.frames)
    if sample.audio is not None and not aligned:
        content.append({"type": "input_audio", "input_audio": {"data": _b64(float_wav_bytes(sample.audio)),
                                                               "format": "wav"}})
    content.append({"type": "text", "text": student_prompt(sample.question, sample.choices)})
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return messages + [{"role": "user", "content": content}]


def request_sampling(decoding: Decoding, logit_bias: dict[str, float] | None = None) -> dict[str, Any]:
    """The request's sampling fields for ``decoding`` (greedy: ``temperature`` 0)."""
    out: dict[str, Any] = {"max_tokens": decoding.max_new_tokens, "temperature": max(0.0, decoding.temperature)}
    if not decoding.greedy:
        out.update(top_p=decoding.top_p, seed=decoding.seed)
        if decoding.top_k:
            out["top_k"] = decoding.top_k
    if logit_bias:
        out["logit_bias"] = dict(logit_bias)
    return out


async def _chat_via_teacher_client(server: ServerConfig, sampling: dict[str, Any],
                                   conversations: Sequence[list[dict[str, Any]]],
                                   extras: Sequence[dict[str, Any]] | None = None) -> list[str | Exception]:
    """The one place the evaluator uses ``teachers.client``: send every conversation concurrently
    (bounded by ``max_in_flight``, retried by the client) and return the full text of each answer,
    reasoning included as ``<think>…</think>`` when the server split it off, or the failure."""
    from teachers.client import ModelCallError, ModelClient

    client = ModelClient(model=server.served_model, base_urls=[server.base_url], sampling=sampling,
                         api_key_env=server.api_key_env, timeout_s=server.timeout_s,
                         max_in_flight=server.max_in_flight, retries=server.retries)
    try:
        extras = extras or [{}] * len(conversations)
        results = await asyncio.gather(*(client.chat(c, e) for c, e in zip(conversations, extras)),
                                       return_exceptions=True)
    finally:
        await client.close()
    out: list[str | Exception] = []
    for result in results:
        if isinstance(result, ModelCallError):
            out.append(result)
        elif isinstance(result, BaseException):
            out.append(ModelCallError(f"{type(result).__name__}: {result}"))
        elif result.reasoning and result.reasoning not in result.raw:
            out.append(f"<think>\n{result.reasoning}\n</think>\n\n{result.raw}")
        else:
            out.append(result.raw)
    return out


class OpenAIGenerator:
    """``generate(samples)`` through an OpenAI-compatible server (see the module doc)."""

    def __init__(self, server: ServerConfig, decoding: Decoding, system: str | None = None,
                 logit_bias: dict[str, float] | None = None, processor: Any = None):
        self.server, self.system = server, system
        self.processor = processor  # local processor of the served model: frame sizes for mm_processor_kwargs
        self.sampling = request_sampling(decoding, logit_bias)
        self.new_tokens: list[int] = []  # not reported by every server: left empty
        self.requests_sent = 0

    def generate(self, samples: Sequence[Any]) -> list[str | Exception]:
        conversations = [api_messages(s, self.system) for s in samples]
        extras = [processor_kwargs(self.processor, s) for s in samples] if self.processor is not None else None
        self.requests_sent += len(conversations)
        return asyncio.run(_chat_via_teacher_client(self.server, self.sampling, conversations, extras))


def processor_kwargs(processor: Any, sample: Any, layout: str = "separate") -> dict[str, Any]:
    """``{"mm_processor_kwargs": …}`` for ``api_messages(sample, layout=layout)``: the frame size and fps
    the local backend processes ``sample`` with (``processor``, the served model's; None: not sent) and,
    for an aligned clip, vLLM's audio-in-video layout. The server needs ``--trust-request-mm-kwargs``."""
    from training.student import frame_kwargs, is_aligned, video_fps

    kwargs = frame_kwargs(processor, sample) if processor is not None and sample.frames else {}
    if is_aligned(sample, layout):
        # vLLM interleaves audio and frames by second_per_grid_ts when the request gives it, else by
        # 1 s per frame grid (its processor computes the right value, but only for the positions)
        kwargs.update(use_audio_in_video=True, fps=video_fps(sample),
                      second_per_grid_ts=[TEMPORAL_PATCH / video_fps(sample)])
    return {"mm_processor_kwargs": kwargs} if kwargs else {}


def suppress_bias(tokenizer_dir: str | None) -> dict[str, float]:
    """``logit_bias`` that forbids the multimodal special tokens (as the local backend's
    ``suppress_tokens``), read from a local copy of the served model's tokenizer; empty without one."""
    if not tokenizer_dir:
        return {}
    from transformers import AutoTokenizer

    from training.student import generation_suppress_tokens

    return {str(i): -100.0 for i in generation_suppress_tokens(AutoTokenizer.from_pretrained(tokenizer_dir))}
