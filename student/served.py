"""Asking a served student: what GRPO's vLLM rollouts (``training.rollout``) and the evaluator's API
backend (``evaluation.api_generator``) both send, and the names its weights are served under.

**The request** for one ``student.inputs.StudentSample`` (``chat_request``: ``api_messages`` plus
``processor_kwargs``) has the student's own prompt text (``student.inputs.student_prompt``), system
turn and media, in the order of the local chat template (media parts, then the text), in either layout:

* ``aligned`` (a clip whose audio covers it, ``student.inputs.is_aligned``): one ``video_url`` part,
  a lossless Matroska clip of the frames with the audio as its sound track (FFV1 + float PCM,
  ``media.files.lossless_clip``: vLLM decodes the same pixels and samples, bit for bit) at the
  clip's frame rate, sent with ``mm_processor_kwargs={"use_audio_in_video": true, ...}``: vLLM then
  takes the audio from the video and interleaves it with the frames as the trainer does, with the
  same prompt token ids. What still differs is ``ALIGNED_DIFFERENCE``: vLLM re-samples a video at
  2 fps, so a clip shorter than 4 s loses frames there;
* ``separate``: the frames as one ``video_url`` holding the frames as comma-separated base64 JPEGs
  (``data:video/jpeg;base64,…``, vLLM's frame-list video format; the JPEG bytes the local backend
  decoded, so both see the same pixels), a still image (OmniBench) as a lossless ``image_url`` PNG,
  and the audio as an ``input_audio`` WAV of 32-bit floats after it (the local samples, not
  re-quantised).

**The processor kwargs** (``processor_kwargs``) carry the frame size, video ``fps`` and per-frame
pixel cap the local processor uses (``student.inputs.frame_kwargs``), so vLLM makes the same media
tokens and time positions; the server needs ``--trust-request-mm-kwargs``. Without them vLLM uses
the Omni processor's default size and 2 fps.

**The suppressed tokens**: the multimodal special tokens the local backend never samples
(``student.inputs.generation_suppress_tokens``) are forbidden with ``logit_bias`` -100
(``suppress_logit_bias``).

**The server's flags** (``serve_flags``), the same for the trainer's rollout server and the
evaluator's own servers: the student's dtype, per-request processor kwargs, explicit sampling, no
processor cache (vLLM 0.32 mishandles a repeated audio-in-video clip), eager mode on CPU.

**The export naming**: a served student is the full-model checkpoint vLLM and lmms-eval load, whose
weights are the thinker's under ``thinker.<name>`` (``renamed``; ``student.export`` writes it, the
rollouts' weight sync sends tensors under these names).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
from PIL import Image

from media import SAMPLE_RATE
from media.files import jpeg_bytes, lossless_clip

if TYPE_CHECKING:  # student.inputs imports torch and transformers: only when a request is built
    from student.inputs import Layout, StudentSample

TEMPORAL_PATCH = 2  # frames per video grid in Qwen2.5-Omni's vision encoder
JPEG_KEY = "avrt_jpeg"  # Image.info key: the JPEG bytes a frame was decoded from (evaluation.evaluate)
PREFIX = "thinker."  # a thinker tensor's name in the full-model checkpoint
# What still differs between vLLM and the trainer in the aligned layout (recorded in an evaluation's run.json)
ALIGNED_DIFFERENCE = ("vLLM re-samples the frames of a video file at its video processor's 2 fps whatever the "
                      "request says: a clip shorter than 4 s (8 frames at more than 2 fps) reaches it with fewer "
                      "frames (6 of 8 for a 3 s clip; 10 s clips keep all 8); and vLLM's kernels round "
                      "differently from transformers'")


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


def api_messages(sample: StudentSample, system: str | None = None, layout: Layout = "aligned") -> list[dict[str, Any]]:
    """The OpenAI chat messages for one sample in ``layout`` (see the module docstring)."""
    from student.inputs import is_aligned, student_prompt, video_fps

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
    content.append({"type": "text", "text": student_prompt(sample.question, sample.choices, sample.prompt)})
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return messages + [{"role": "user", "content": content}]


def processor_kwargs(processor: Any, sample: StudentSample, layout: Layout = "aligned") -> dict[str, Any]:
    """``{"mm_processor_kwargs": …}`` for ``api_messages(sample, layout=layout)``: the frame size and fps
    the local backend processes ``sample`` with (``processor``, the served model's; None: not sent) and,
    for an aligned clip, vLLM's audio-in-video layout. The server needs ``--trust-request-mm-kwargs``."""
    from student.inputs import frame_kwargs, is_aligned, video_fps

    kwargs = frame_kwargs(processor, sample) if processor is not None and sample.frames else {}
    if is_aligned(sample, layout):
        # vLLM interleaves audio and frames by second_per_grid_ts when the request gives it, else by
        # 1 s per frame grid (its processor computes the right value, but only for the positions)
        kwargs.update(use_audio_in_video=True, fps=video_fps(sample),
                      second_per_grid_ts=[TEMPORAL_PATCH / video_fps(sample)])
    return {"mm_processor_kwargs": kwargs} if kwargs else {}


def chat_request(sample: StudentSample, system: str | None, layout: Layout, processor: Any = None) -> dict[str, Any]:
    """The chat-completion body for ``sample`` without ``model`` and sampling: its messages and
    processor kwargs."""
    return {"messages": api_messages(sample, system, layout), **processor_kwargs(processor, sample, layout)}


def suppress_logit_bias(token_ids: Iterable[int]) -> dict[str, float]:
    """``logit_bias`` that forbids ``token_ids`` (the multimodal special tokens)."""
    return {str(i): -100.0 for i in token_ids}


def suppress_bias(tokenizer_dir: str | None) -> dict[str, float]:
    """``suppress_logit_bias`` of the multimodal special tokens, read from a local copy of the served
    model's tokenizer; empty without one."""
    if not tokenizer_dir:
        return {}
    from transformers import AutoTokenizer

    from student.inputs import generation_suppress_tokens

    return suppress_logit_bias(generation_suppress_tokens(AutoTokenizer.from_pretrained(tokenizer_dir)))


def renamed(names: Sequence[str]) -> dict[str, str]:
    """``{thinker name: full-model name}``: the published Qwen2.5-Omni naming."""
    return {name: PREFIX + name for name in names}


def serve_flags(served_name: str, port: int, dtype: str, on_gpu: bool, gpu_memory: float | None = None) -> list[str]:
    """vLLM flags (after ``--model DIR``) of a server of the student on loopback ``port``, serving in
    ``dtype``; ``gpu_memory``: its ``--gpu-memory-utilization`` on a GPU (None: vLLM's default)."""
    flags = ["--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
             "--dtype", dtype,  # the student's: vLLM on CPU would otherwise serve an fp32 checkpoint in bf16
             "--trust-request-mm-kwargs",  # the aligned layout's per-request use_audio_in_video
             "--generation-config", "vllm",  # requests carry every sampling parameter
             # vLLM 0.32's processor cache mishandles a repeated audio-in-video clip ("Video doesn't have
             # audio track", vllm#36800): process every request afresh
             "--mm-processor-cache-gb", "0"]
    if not on_gpu:
        flags += ["--enforce-eager"]  # no torch.compile warm-up on CPU: a faster start
    elif gpu_memory is not None:
        flags += ["--gpu-memory-utilization", f"{gpu_memory:g}"]
    return flags

