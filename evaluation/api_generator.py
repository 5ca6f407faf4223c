"""The evaluator's OpenAI-API backend: the student's exact input, sent to a model behind a server.

``OpenAIGenerator`` turns each ``student.inputs.StudentSample`` into one chat request built by
``student.served`` (the same builder GRPO's vLLM rollouts use): the same prompt text, system turn and
media as the local backend, in the same layout. ``aligned`` (the default, as the student is
trained): a clip whose audio covers it goes as one lossless video with its sound track and
``mm_processor_kwargs={"use_audio_in_video": true, ...}`` (vLLM started with
``--trust-request-mm-kwargs``); ``separate``: the frames as one video, the audio as its own part
after it. With ``processor`` (``--mm-processor-kwargs``) each request also carries the frame size,
video ``fps`` and per-frame pixel cap the local backend gives the processor
(``student.served.processor_kwargs``, read from a local copy of the served model's processor), so
vLLM makes the same media tokens and time positions; without it vLLM uses the Omni processor's
default size and 2 fps.

Greedy is ``temperature 0``; the multimodal special tokens that the local backend suppresses are
suppressed with ``logit_bias`` -100 when a local tokenizer is given (``student.served.suppress_bias``).
Requests go through the project's teacher client (``teachers.client``: retries with backoff, bound on
requests in flight) via one adapter function, ``_chat_via_teacher_client``. A request that fails for
good becomes that sample's error (an ``Exception`` in place of its text), never the run's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evaluation.config import Decoding, ServerConfig
from student.served import api_messages, processor_kwargs

if TYPE_CHECKING:
    from student.inputs import Layout


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
                 logit_bias: dict[str, float] | None = None, processor: Any = None, layout: Layout = "aligned"):
        self.server, self.system, self.layout = server, system, layout
        self.processor = processor  # local processor of the served model: frame sizes for mm_processor_kwargs
        self.sampling = request_sampling(decoding, logit_bias)
        self.new_tokens: list[int] = []  # not reported by every server: left empty
        self.requests_sent = 0

    def generate(self, samples: Sequence[Any]) -> list[str | Exception]:
        conversations = [api_messages(s, self.system, self.layout) for s in samples]
        extras = [processor_kwargs(self.processor, s, self.layout) for s in samples]
        self.requests_sent += len(conversations)
        return asyncio.run(_chat_via_teacher_client(self.server, self.sampling, conversations, extras))
