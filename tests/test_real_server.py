"""Real parts: the tiny models answer through `transformers serve` via the official openai client,
and build-avrt runs end to end against that server."""

from __future__ import annotations

import json

import openai
import pandas as pd
import pytest

from media import MediaSettings, extract_audio, extract_frames
from media.files import jpeg_bytes, wav_bytes
from teachers.requests import audio_part, image_part

pytestmark = pytest.mark.slow


def test_tiny_omni_answers_eight_frames_and_a_wav(transformers_server, tiny_models, synthetic_data):
    video = synthetic_data / "videos" / "syn0002_000020.mp4"
    frames, _ = extract_frames(video, MediaSettings(max_side=160))
    wav = wav_bytes(extract_audio(video))
    client = openai.OpenAI(base_url=transformers_server, api_key="unused")
    parts = [image_part(jpeg_bytes(f)) for f in frames] + [audio_part(wav)]  # JSON text, as the pipeline sends them
    content = [json.loads(p) for p in parts] + [{"type": "text", "text": "What do you see and hear?"}]
    response = client.chat.completions.create(model=str(tiny_models["omni"]), temperature=0.0, max_tokens=8,
                                              messages=[{"role": "user", "content": content}])
    assert response.choices[0].message.content is not None
    assert response.usage is None or response.usage.completion_tokens <= 8


def test_tiny_text_model_answers(transformers_server, tiny_models):
    client = openai.OpenAI(base_url=transformers_server, api_key="unused")
    response = client.chat.completions.create(model=str(tiny_models["text"]), max_tokens=8, temperature=0.0,
                                              messages=[{"role": "user", "content": "Merge these analyses."}])
    assert isinstance(response.choices[0].message.content, str)


def test_build_avrt_through_transformers_serve(transformers_server, tiny_models, synthetic_data, prefect_api, tmp_path):
    from flows.build_avrt import build_avrt

    def endpoint(model, prompt):
        return {"model": str(model), "base_url": transformers_server, "prompt": prompt, "temperature": 0.0,
                "max_tokens": 16, "timeout_s": 120, "max_in_flight": 2, "retries": 1}

    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "vision_teacher": endpoint(tiny_models["omni"], "vision_teacher"),
        "audio_teacher": endpoint(tiny_models["omni"], "audio_teacher"),
        "merger": endpoint(tiny_models["text"], "merger"),
        "media": {"max_side": 160}, "filter": "all", "merger_kind": "llm", "merger_attempts": 1,
        "stats_tokenizer": str(tiny_models["omni"]),
    }))
    out = tmp_path / "out"
    stats = build_avrt(manifest=str(synthetic_data / "manifest.jsonl"), out=str(out), config=str(config), limit=2)
    # Random tiny models: every teacher call reaches the server and is recorded; the LLM merger's
    # random text cannot pass validation, so both samples are dropped at the merger with a reason.
    assert stats["samples_in"] == 2
    assert stats["calls_sent"]["vision"] == 2 and stats["calls_sent"]["audio"] == 2
    rejected = pd.read_parquet(out / "rejected" / "train.parquet")
    assert set(rejected["stage"]) == {"merger"}
    assert all(isinstance(t, str) for t in rejected["vision_raw"])
    assert json.loads((out / "stats.json").read_text())["token_unit"].startswith("tokens")


def test_check_sends_one_sample_to_each_real_endpoint(transformers_server, tiny_models, synthetic_data, tmp_path, capsys):
    import yaml

    from flows.check import EXIT_OK, main

    def endpoint(model, prompt):
        return {"model": str(model), "base_url": transformers_server, "prompt": prompt, "temperature": 0.0,
                "max_tokens": 16, "timeout_s": 120, "retries": 0}

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"vision_teacher": endpoint(tiny_models["omni"], "vision_teacher"),
                                      "audio_teacher": endpoint(tiny_models["omni"], "audio_teacher"),
                                      "merger": endpoint(tiny_models["text"], "merger"), "media": {"max_side": 160}}))
    assert main(["--config", str(config), "--manifest", str(synthetic_data / "manifest.jsonl")]) == EXIT_OK
    lines = [line for line in capsys.readouterr().out.splitlines() if transformers_server in line]
    # Random tiny models answer through the real server: each role gets a line, none failed.
    assert [line.split()[1] for line in lines] == ["vision", "audio", "merger"]
    assert all(line.split()[0] in ("ok", "WARN") for line in lines)
