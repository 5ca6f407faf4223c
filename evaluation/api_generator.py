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
Requests go through the project's teacher client (``teachers.client``: retries with backoff, spread
over the servers, a failing one tried last, bound on requests in flight) via one adapter function,
``_chat_via_teacher_client``. A request that fails for good becomes that sample's error (an
``Exception`` in place of its text), never the run's: one the server refused is the item's error; one
that got no answer (a server down) is left for a re-run by ``evaluation.evaluate``, never scored.
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
                                   extras: Sequence[dict[str, Any]] | None = None,
                                   base_urls: Sequence[str] | None = None) -> list[tuple[str | Exception, int | None]]:
    """The one place the evaluator uses ``teachers.client``: send every conversation concurrently to the
    server (or spread over ``base_urls``; each bounded by ``max_in_flight``, retried by the client) and
    return, per conversation, the full text of its answer (reasoning included as ``<think>…</think>``
    when the server split it off) or the failure, with the tokens generated when the server says."""
    from teachers.client import ModelCallError, ModelClient

    client = ModelClient(model=server.served_model, base_urls=list(base_urls or [server.base_url]), sampling=sampling,
                         api_key_env=server.api_key_env, timeout_s=server.timeout_s,
                         max_in_flight=server.max_in_flight, retries=server.retries)
    try:
        extras = extras or [{}] * len(conversations)
        results = await asyncio.gather(*(client.chat(c, e) for c, e in zip(conversations, extras)),
                                       return_exceptions=True)
    finally:
        await client.close()
    out: list[tuple[str | Exception, int | None]] = []
    for result in results:
        if isinstance(result, ModelCallError):
            out.append((result, None))
        elif isinstance(result, BaseException):
            out.append((ModelCallError(f"{type(result).__name__}: {result}"), None))
        elif result.reasoning and result.reasoning not in result.raw:
            out.append((f"<think>\n{result.reasoning}\n</think>\n\n{result.raw}", result.completion_tokens))
        else:
            out.append((result.raw, result.completion_tokens))
    return out


class OpenAIGenerator:
    """``generate(samples)`` through an OpenAI-compatible server, or several serving the same model
    (``base_urls``; see the module doc)."""

    def __init__(self, server: ServerConfig, decoding: Decoding, system: str | None = None,
                 logit_bias: dict[str, float] | None = None, processor: Any = None, layout: Layout = "aligned",
                 base_urls: Sequence[str] | None = None):
        self.server, self.system, self.layout = server, system, layout
        self.base_urls = list(base_urls or [server.base_url])
        self.processor = processor  # local processor of the served model: frame sizes for mm_processor_kwargs
        self.sampling = request_sampling(decoding, logit_bias)
        self.new_tokens: list[int | None] = []  # per sample of the last call, as the server reports them
        self.requests_sent = 0

    @property
    def in_flight(self) -> int:
        """Requests the servers take at once: a batch of items this large keeps them busy."""
        return self.server.max_in_flight * len(self.base_urls)

    def generate(self, samples: Sequence[Any]) -> list[str | Exception]:
        conversations = [api_messages(s, self.system, self.layout) for s in samples]
        extras = [processor_kwargs(self.processor, s, self.layout) for s in samples]
        self.requests_sent += len(conversations)
        answers = asyncio.run(_chat_via_teacher_client(self.server, self.sampling, conversations, extras,
                                                       self.base_urls))
        self.new_tokens = [tokens for _, tokens in answers]
        return [text for text, _ in answers]
