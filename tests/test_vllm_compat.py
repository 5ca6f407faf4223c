"""The evaluator's requests and the student export against vLLM's own code (no GPU, no server).

Skipped where vLLM is not importable (it lives in its own environment: see README). To run it on a
CPU machine: a venv that sees this project's packages, ``pip install --no-deps vllm==0.33.0 cbor2
pyzmq aiohttp multidict yarl propcache aiohappyeyeballs aiosignal frozenlist openai-harmony pybase64
msgspec uvloop py-cpuinfo einops xgrammar apache-tvm-ffi partial-json-parser llguidance``, and
``VLLM_TARGET_DEVICE=cpu``.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from safetensors import safe_open

vllm = pytest.importorskip("vllm", reason="vLLM lives in its own environment")

from evaluation.api_generator import api_messages, request_sampling, suppress_bias  # noqa: E402
from evaluation.benchmarks import load_manifest  # noqa: E402
from evaluation.config import Decoding  # noqa: E402
from evaluation.evaluate import load_item_media, make_sample  # noqa: E402
from evaluation.export_student import export_student  # noqa: E402


def test_vllm_accepts_the_request_and_decodes_the_very_frames_and_samples(tiny_models, synthetic_data, tmp_path):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.multimodal.media.audio import AudioMediaIO
    from vllm.multimodal.media.image import ImageMediaIO
    from vllm.multimodal.media.video import VideoMediaIO

    item = load_manifest(synthetic_data / "manifest.jsonl")[0]
    media = load_item_media(item)
    messages = api_messages(make_sample(item, media, "av"), system="You are a student.")
    body = {"model": "avrt", "messages": messages,
            **request_sampling(Decoding(max_new_tokens=64), suppress_bias(str(tiny_models["omni"])))}
    request = ChatCompletionRequest.model_validate(body)
    assert request.max_tokens == 64 and request.temperature == 0.0 and request.logit_bias

    video, audio, _ = messages[1]["content"]
    media_type, data = video["video_url"]["url"][len("data:"):].split(";base64,", 1)
    frames, metadata = VideoMediaIO(ImageMediaIO()).load_base64(media_type, data).media
    assert frames.shape[0] == 8 and metadata["video_backend"] == "jpeg_sequence"
    assert all(np.array_equal(f, np.asarray(g)) for f, g in zip(frames, media.frames))
    samples, rate = AudioMediaIO().load_bytes(base64.b64decode(audio["input_audio"]["data"]))
    assert rate == 16000 and np.array_equal(np.asarray(samples, dtype=np.float32), media.audio)


def test_vllm_maps_the_export_onto_its_qwen2_5_omni_implementation(tiny_models, tmp_path):
    from vllm.model_executor.models.qwen2_5_omni_thinker import Qwen2_5OmniThinkerForConditionalGeneration
    from vllm.model_executor.models.registry import ModelRegistry

    out = export_student(tiny_models["omni"], tmp_path / "export")
    import json

    architecture = json.loads((out / "config.json").read_text())["architectures"][0]
    assert architecture in ModelRegistry.get_supported_archs()
    assert "Qwen2_5OmniThinkerForConditionalGeneration" not in ModelRegistry.get_supported_archs()
    mapper = Qwen2_5OmniThinkerForConditionalGeneration.hf_to_vllm_mapper
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        mapped = {mapper._map_name(k) for k in f.keys()}
    assert None not in mapped, "no weight of the export is dropped"
    assert {m.split(".")[0] for m in mapped} == {"language_model", "audio_tower", "visual"}
    assert any(m.startswith("language_model.lm_head.") for m in mapped)
    assert any(m.startswith("language_model.model.layers.0.") for m in mapped)
