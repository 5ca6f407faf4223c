"""Unit tests of build-avrt's pure parts: manifests, config, cache keys, media conventions."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from corpus.manifest import ManifestError, load_manifest
from flows.config import load_config
from media import audio_window, frame_timestamps
from media.extract import frame_indices
from media.files import content_key
from teachers.calls import CallCache


def test_jsonl_avqa_and_image_audio_manifests(synthetic_data, tmp_path):
    jsonl = load_manifest(synthetic_data / "manifest.jsonl")
    avqa = load_manifest(synthetic_data / "avqa.json", video_dir=synthetic_data / "videos")
    assert [s.answer for s in jsonl] == [s.answer for s in avqa]
    assert [s.video for s in jsonl] == [s.video for s in avqa]
    assert all(s.choices == a.choices for s, a in zip(jsonl, avqa))
    rows = [{"id": "x", "image": "a.png", "audio": "a.wav", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2}]
    path = tmp_path / "ia.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    sample = load_manifest(path)[0]
    assert sample.answer == "C" and sample.image == str(tmp_path / "a.png") and sample.video is None
    assert len(load_manifest(synthetic_data / "manifest.jsonl", limit=2)) == 2


@pytest.mark.parametrize("row, message", [
    ({"id": "x", "video": "v.mp4", "question": "Q", "choices": ["a", "b"], "answer": "C"}, "not one of the options"),
    ({"id": "x", "question": "Q", "choices": ["a", "b"], "answer": "A"}, "needs 'video'"),
    ({"id": "x", "video": "v.mp4", "choices": ["a", "b"], "answer": "A"}, "missing field"),
])
def test_bad_manifest_rows_fail_clearly(tmp_path, row, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_duplicate_ids_are_refused(tmp_path):
    row = {"id": "x", "video": "v.mp4", "question": "Q", "choices": ["a", "b"], "answer": "A"}
    path = tmp_path / "m.jsonl"
    path.write_text((json.dumps(row) + "\n") * 2)
    with pytest.raises(ManifestError, match="duplicate id"):
        load_manifest(path)


def test_config_registry_defaults_overrides_and_teacher_swap(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "vision_teacher: {use: kimi-vl-a3b-thinking, base_url: [http://a/v1, http://b/v1], api_key_env: MY_KEY}\n"
        "audio_teacher: {use: audio-flamingo-3-think, base_url: http://c/v1}\n"
        "merger: {use: qwen2.5-14b-instruct, base_url: http://d/v1}\n")
    config = load_config(path)
    assert config.vision_teacher.model == "moonshotai/Kimi-VL-A3B-Thinking"
    assert config.vision_teacher.base_url == ["http://a/v1", "http://b/v1"]
    assert config.vision_teacher.temperature == 0.8 and config.filter == "both"
    changed = load_config(path, {"merger.temperature": "0.1", "filter": "all", "vision_teacher": "kimi-vl-a3b-thinking"})
    assert changed.merger.temperature == 0.1 and changed.filter == "all"
    assert changed.vision_teacher.base_url == ["http://a/v1", "http://b/v1"] and changed.vision_teacher.api_key_env == "MY_KEY"
    with pytest.raises(KeyError, match="unknown teacher"):
        load_config(path, {"audio_teacher": "no-such-teacher"})
    with pytest.raises(ValidationError, match="vision_teacher uses 'audio-flamingo-3-think', a registry entry for the audio role"):
        load_config(path, {"vision_teacher": "audio-flamingo-3-think"})


def test_cache_keys_depend_on_exactly_what_determines_the_answer(tmp_path):
    base = {"model": "m", "sampling": {"temperature": 0.8}, "text": "prompt", "media": ["abc"]}
    key = content_key(**base)
    assert key == content_key(**dict(reversed(list(base.items()))))  # order of fields is irrelevant
    for change in ({"model": "m2"}, {"sampling": {"temperature": 0.7}}, {"text": "prompt!"}, {"media": ["abd"]}):
        assert content_key(**{**base, **change}) != key
    cache = CallCache(tmp_path)
    assert cache.get("calls/x", key) is None
    cache.put("calls/x", key, {"content": "hi"})
    assert cache.get("calls/x", key) == {"content": "hi"}
    assert cache.counts() == {"calls/x": {"hits": 1, "misses": 1}}


def test_frame_and_audio_conventions():
    assert frame_timestamps(10.0) == [0.625, 1.875, 3.125, 4.375, 5.625, 6.875, 8.125, 9.375]
    assert frame_indices(250) == [15, 46, 78, 109, 140, 171, 203, 234]
    assert frame_indices(3) == [0, 0, 0, 1, 1, 2, 2, 2]  # fewer frames than asked: repeated
    assert audio_window(10.0) == (0.0, 10.0)
    assert audio_window(30.0) == (10.0, 10.0)  # centred
    assert audio_window(3.0) == (0.0, 3.0)  # short clips as they are, no padding


def test_model_and_base_url_take_the_role_paper_defaults():
    from teachers.registry import lookup

    config = load_config("configs/build/minimal.yaml")
    for role, section in (("vision", config.vision_teacher), ("audio", config.audio_teacher), ("merger", config.merger)):
        paper = lookup({"vision": "kimi-vl-a3b-thinking", "audio": "audio-flamingo-3-think", "merger": "qwen2.5-14b-instruct"}[role])
        assert section.prompt == paper["prompt"] and section.role is None  # no registry entry named
        assert (section.temperature, section.top_p, section.max_tokens) == (paper["temperature"], paper["top_p"], paper["max_tokens"])
        assert section.question_suffix == "" and section.extra_body == {}  # model-specific settings are not defaults


def test_request_body_is_the_official_clients_json_with_media_encoded_once():
    import base64
    import json

    from openai._utils._json import openapi_dumps

    from teachers.requests import audio_messages, dumps_body, image_part, text_messages, vision_messages

    jpeg, wav = b"\xff\xd8jpeg bytes", b"RIFF wav bytes"
    body = {"model": "m", "messages": vision_messages("Q: é?", [jpeg, image_part(jpeg)]), "temperature": 0.7,
            "extra": {"top_k": 20, "stop": None}}
    decoded = json.loads(dumps_body(body))
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}}
    assert decoded["messages"][0]["content"] == [image, image, {"type": "text", "text": "Q: é?"}]
    assert decoded["extra"] == {"top_k": 20, "stop": None} and decoded["temperature"] == 0.7
    audio = json.loads(dumps_body(audio_messages("t", wav)))[0]["content"][0]
    assert audio == {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    plain = {"model": "m", "messages": text_messages('say "hi"\n'), "max_tokens": 5}
    assert dumps_body(plain) == openapi_dumps(plain)  # byte for byte, without media parts


def test_a_clip_is_hashed_read_and_encoded_once_for_all_its_questions(synthetic_data, tmp_path, monkeypatch):
    """AVQA asks several questions per video: the file is digested once, its frames and audio are
    base64-encoded once, and every question's request carries those same bytes."""
    import asyncio
    import base64

    import flows.stages as stages
    import media.store
    from corpus.manifest import Sample
    from flows.stages import SampleProcessor
    from teachers.requests import dumps_body

    video = str(synthetic_data / json.loads((synthetic_data / "manifest.jsonl").read_text().splitlines()[0])["video"])
    (tmp_path / "c.yaml").write_text("vision_teacher: {model: v, base_url: http://127.0.0.1:9/v1}\n"
                                     "audio_teacher: {model: a, base_url: http://127.0.0.1:9/v1}\n"
                                     "merger: {model: m, base_url: http://127.0.0.1:9/v1}\nmedia: {max_side: 160}\n")
    processor = SampleProcessor(load_config(tmp_path / "c.yaml"), tmp_path / "out")
    counts = {"digest": 0, "image": 0, "audio": 0}

    def counting(name, real):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(media.store, "digest_file", counting("digest", media.store.digest_file))
    monkeypatch.setattr(stages, "image_part", counting("image", stages.image_part))
    monkeypatch.setattr(stages, "audio_part", counting("audio", stages.audio_part))
    stages._encoded_frame.cache_clear()
    stages._encoded_audio.cache_clear()
    bodies = []
    for i in range(5):
        meta = asyncio.run(processor.media(Sample(id=f"s{i}", question=f"Q{i}", choices=["a", "b"], answer="A", video=video)))
        frames = [stages._encoded_frame(str(processor.outdir / p)) for p in meta["frames"]]
        bodies.append(json.loads(dumps_body(stages.vision_messages(f"Q{i}", frames)
                                                   + stages.audio_messages(f"Q{i}", stages._encoded_audio(
                                                       str(processor.outdir / meta["audio"]))))))
    assert counts == {"digest": 1, "image": len(meta["frames"]), "audio": 1}
    first = (processor.outdir / meta["frames"][0]).read_bytes()
    vision, audio = bodies[-1][0]["content"], bodies[-1][1]["content"]
    assert vision[0]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(first).decode()
    assert vision[-1]["text"] == "Q4" and len(vision) == len(meta["frames"]) + 1
    assert base64.b64decode(audio[0]["input_audio"]["data"]) == (processor.outdir / meta["audio"]).read_bytes()


def test_a_replaced_source_file_is_not_recalled(synthetic_data, tmp_path):
    """The per-process memo holds while a file's size and mtime stay; a replaced file is read again."""
    import shutil

    from media import MediaSettings
    from media.store import MediaStore

    rows = [json.loads(line) for line in (synthetic_data / "manifest.jsonl").read_text().splitlines()]
    first, other = (synthetic_data / rows[0]["video"]), (synthetic_data / rows[1]["video"])
    video = tmp_path / "clip.mp4"
    shutil.copy(first, video)
    store = MediaStore(tmp_path / "cache", tmp_path / "out", MediaSettings(max_side=160))
    assert store.recall(str(video)) is None
    meta, extracted = store.get(str(video))
    assert extracted and store.recall(str(video)) == meta
    shutil.copy(other, video)
    os.utime(video, ns=(1, 1))
    assert store.recall(str(video)) is None
    replaced, extracted = store.get(str(video))
    assert extracted and replaced["key"] != meta["key"]


def test_enough_shards_are_admitted_to_keep_every_slot_busy_within_a_thread_cap(tmp_path):
    """A shard holds its place until its slowest sample is decided, so many are admitted at once:
    32 samples per slot of the busiest endpoint (replicas count), at most 256 shards, never more
    than exist; ``max_concurrent_shards`` overrides."""
    from flows.execution import admitted_shards

    def config(in_flight: int, replicas: int = 1, **extra):
        urls = [f"http://127.0.0.1:{9000 + i}/v1" for i in range(replicas)]
        return load_config(None, overrides={"vision_teacher.model": "v", "vision_teacher.base_url": urls,
                                            "audio_teacher.model": "a", "audio_teacher.base_url": "http://127.0.0.1:9/v1",
                                            "merger.model": "m", "merger.base_url": "http://127.0.0.1:9/v1",
                                            "vision_teacher.max_in_flight": in_flight, **extra})

    assert admitted_shards(config(32), 1000) == 32 * 32 // 64 + 1
    assert admitted_shards(config(32, replicas=2), 1000) == 2 * 32 * 32 // 64 + 1
    assert admitted_shards(config(32), 5) == 5
    assert admitted_shards(config(128, replicas=8), 10_000) == 256
    assert admitted_shards(config(32, max_concurrent_shards=3), 1000) == 3


def test_a_shared_call_shares_its_failure_and_the_next_call_is_sent_again(tmp_path):
    # two identical requests at once: one is sent; when it stays pending both are pending, nothing
    # is cached, and a later identical request is sent again
    import asyncio

    from teachers.calls import cached_chat
    from teachers.client import CallPending, ChatResult

    class Client:
        model, sampling, sent = "m", {"temperature": 1.0}, 0

        async def chat(self, messages):
            self.sent += 1
            await asyncio.sleep(0.05)
            if self.sent == 1:
                raise CallPending("m: no answer (timed out)")
            return ChatResult("Answer: (A)", "", "stop", "Answer: (A)")

    async def go():
        cache, client = CallCache(tmp_path), Client()
        ask = lambda: cached_chat(cache, client, "vision", {"text": "t"}, [{"role": "user", "content": "t"}])  # noqa: E731
        first = await asyncio.gather(ask(), ask(), return_exceptions=True)
        assert [type(r) for r in first] == [CallPending, CallPending] and client.sent == 1
        assert not cache.in_flight
        result, from_cache = await ask()
        assert (result.content, from_cache, client.sent) == ("Answer: (A)", False, 2)

    asyncio.run(go())
