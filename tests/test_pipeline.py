"""build-avrt end to end against the scripted OpenAI-compatible server (logic, caching, faults)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from corpus.stats import STAGES
from flows.build_avrt import build_avrt
from tests.pipeline_helpers import merger_handler, numbered_manifest, teacher_handler, write_config
from tests.scripted_server import Reply


@pytest.fixture(autouse=True)
def prefect_backend(prefect_api):
    """Every flow here reports to the session's temporary Prefect server."""


def _corpus(out) -> pd.DataFrame:
    return pd.read_parquet(out / "corpus" / "train.parquet")


def _rejected(out) -> pd.DataFrame:
    return pd.read_parquet(out / "rejected" / "train.parquet")


def test_run_rerun_and_teacher_swap(synthetic_data, scripted_server, tmp_path):
    manifest, rows = numbered_manifest(synthetic_data, tmp_path, n=6)
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    wrong = {i: "ABCD"[("ABCD".index(g) + 1) % 4] for i, g in gold.items()}
    vision = {**gold, 5: "I cannot tell from these frames."}
    audio = {**gold, 4: wrong[4]}
    scripted_server.set_handler("vision", teacher_handler(vision))
    scripted_server.set_handler("audio", teacher_handler(audio))
    scripted_server.set_handler("audio2", teacher_handler(gold))
    scripted_server.set_handler("merger", merger_handler(bad_first={1}))
    config = write_config(tmp_path / "config.yaml", scripted_server.url)
    out = tmp_path / "out"

    stats = build_avrt(manifest=str(manifest), out=str(out), config=str(config))
    corpus, rejected = _corpus(out), _rejected(out)
    assert sorted(corpus["id"]) == sorted(rows[i]["id"] for i in range(4))
    assert set(rejected["stage"]) == {"filter"}
    reasons = dict(zip(rejected["id"], rejected["reason"]))
    assert "audio teacher wrong" in reasons[rows[4]["id"]]
    assert reasons[rows[5]["id"]].startswith("vision teacher gave no answer (refused or undecided")
    assert scripted_server.counts == {"vision": 6, "audio": 6, "merger": 5}  # sample 1 needed a second merge
    merged = dict(zip(corpus["id"], corpus["merged"]))
    assert all(m.endswith(f"<answer>{gold[i]}</answer>") for i, m in enumerate(merged[rows[i]["id"]] for i in range(4)))
    assert "told" not in merged[rows[1]["id"]]
    row = corpus.iloc[0]
    assert len(row["frames"]) == 8 and all((out / f).exists() for f in row["frames"]) and (out / row["audio"]).exists()
    assert row["vision_model"] == "vision" and len(row["vision_prompt_sha256"]) == 64
    assert stats["samples_in"] == 6 and stats["samples_kept"] == 4
    assert stats["teachers"]["vision"]["accuracy"] == pytest.approx(5 / 6, abs=1e-3)
    assert stats["teachers"]["audio"]["accuracy"] == pytest.approx(5 / 6, abs=1e-3)
    assert stats["format_compliance"] == 1.0
    assert json.loads((out / "stats.json").read_text())["samples_kept"] == 4
    assert (out / "README.md").read_text().startswith("---") and (out / "stats.png").stat().st_size > 0

    # An unchanged re-run makes no model call and writes the same corpus.
    scripted_server.reset_counts()
    build_avrt(manifest=str(manifest), out=str(out), config=str(config), overrides={"shard_size": 2})
    assert sum(scripted_server.counts.values()) == 0
    assert sorted(_corpus(out)["id"]) == sorted(corpus["id"])

    # Swapping the audio teacher re-asks only the audio teacher and the merger.
    scripted_server.reset_counts()
    build_avrt(manifest=str(manifest), out=str(out), config=str(config), overrides={"audio_teacher.model": "audio2"})
    assert scripted_server.counts["vision"] == 0
    assert scripted_server.counts["audio2"] == 6
    assert scripted_server.counts["merger"] == 1  # only sample 4 is new in the corpus; the rest are cached merges
    assert len(_corpus(out)) == 5
    assert (_corpus(out)["audio_model"] == "audio2").all()

    # Changing only the filter policy re-asks no teacher.
    scripted_server.reset_counts()
    build_avrt(manifest=str(manifest), out=str(out), config=str(config), overrides={"filter": "all"})
    assert scripted_server.counts["vision"] == 0 and scripted_server.counts["audio"] == 0
    assert len(_corpus(out)) == 6


def test_faults_verdicts_are_rows_and_transport_failures_stay_pending(synthetic_data, scripted_server, tmp_path):
    manifest, rows = numbered_manifest(synthetic_data, tmp_path, n=4)
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    flaky = {"count": 0}

    def vision(request):
        from tests.pipeline_helpers import question_index

        i = question_index(request)
        if i == 0:  # two HTTP 500s, then an answer: retried and kept
            flaky["count"] += 1
            return Reply(status=500) if flaky["count"] <= 2 else Reply(f"Answer: ({gold[0]})")
        if i == 1:
            return Reply(delay=3.0, content="too late")  # every attempt times out: pending, not rejected
        if i == 2:
            return Reply(status=400)  # the request itself is bad: a verdict, not retried
        return Reply("%%% garbage ###", delay=0.8)  # answered (while sample 1 still fails): the endpoint is up

    scripted_server.set_handler("vision", vision)
    scripted_server.set_handler("audio", teacher_handler(gold))
    scripted_server.set_handler("merger", merger_handler())
    config = write_config(tmp_path / "config.yaml", scripted_server.url)
    text = config.read_text().replace("timeout_s: 5", "timeout_s: 1")
    config.write_text(text)
    out = tmp_path / "out"
    stats = build_avrt(manifest=str(manifest), out=str(out), config=str(config))
    assert list(_corpus(out)["id"]) == [rows[0]["id"]]
    rejected = _rejected(out).set_index("id")
    assert rows[1]["id"] not in rejected.index  # an outage is never a verdict
    assert stats["pending"]["samples"] == 1 and stats["stopped"] is None
    assert list(stats["pending"]["reasons"]) == ["vision_teacher: timed out after 1 s"]
    assert "HTTP 400" in rejected.loc[rows[2]["id"], "reason"]
    assert rejected.loc[rows[3]["id"], "stage"] == "filter"
    assert "vision" in rejected.loc[rows[3]["id"], "reason"]
    assert scripted_server.counts["vision"] == 3 + 3 + 1 + 1  # 500,500,ok | 3 timeouts | 400 | garbage

    # The server recovers: a re-run asks only the pending sample again.
    scripted_server.reset_counts()
    scripted_server.set_handler("vision", teacher_handler(gold))
    stats = build_avrt(manifest=str(manifest), out=str(out), config=str(config))
    assert dict(scripted_server.counts) == {"vision": 1, "merger": 1}
    assert stats["pending"]["samples"] == 0
    assert sorted(_corpus(out)["id"]) == sorted([rows[0]["id"], rows[1]["id"]])


def test_odd_and_broken_media(synthetic_data, scripted_server, tmp_path):
    odd = [json.loads(l) for l in (synthetic_data / "odd_manifest.jsonl").read_text().splitlines()]
    manifest = tmp_path / "odd.jsonl"
    manifest.write_text("".join(json.dumps({**r, "video": str(synthetic_data / r["video"])}) + "\n" for r in odd))
    scripted_server.set_handler("vision", lambda r: Reply("Answer: (B)"))
    scripted_server.set_handler("audio", lambda r: Reply("Answer: (B)"))
    scripted_server.set_handler("merger", lambda r: Reply("<think>Green screen, high tone.</think><answer>B</answer>"))
    out = tmp_path / "out"
    build_avrt(manifest=str(manifest), out=str(out), config=str(write_config(tmp_path / "c.yaml", scripted_server.url)))
    kept = set(_corpus(out)["id"])
    rejected = _rejected(out).set_index("id")
    for row in odd:
        if row["expect"] == "ok":
            assert row["id"] in kept, row["id"]
        else:
            assert rejected.loc[row["id"], "stage"] == "media"
            assert row["expect"] in rejected.loc[row["id"], "reason"], (row["id"], rejected.loc[row["id"], "reason"])
    corpus = _corpus(out).set_index("id")
    assert len(corpus.loc["short_3s", "frames"]) == 8
    import soundfile as sf

    info = sf.info(out / corpus.loc["short_3s", "audio"])
    assert info.samplerate == 16000 and info.channels == 1 and 2.5 < info.duration <= 3.1  # not padded
    assert corpus.loc["portrait", "resolution"] == "90x160"  # portrait kept, downscaled to max_side


def test_stage_names_are_documented():
    assert STAGES == ("manifest", "media", "vision_teacher", "audio_teacher", "filter", "merger")


def test_image_and_audio_rows(scripted_server, tmp_path):
    import numpy as np
    import soundfile as sf
    from PIL import Image

    Image.fromarray(np.full((64, 96, 3), 200, np.uint8)).save(tmp_path / "still.png")
    sf.write(tmp_path / "long.wav", 0.1 * np.sin(np.arange(16_000 * 14) / 10), 16_000)  # 14 s
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    rows = [("ok", "still.png", "long.wav"), ("bad_audio", "still.png", "broken.wav"), ("no_image", "none.png", "long.wav")]
    manifest = tmp_path / "ia.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "image": img, "audio": wav, "question": "Q?", "choices": ["a", "b", "c", "d"],
                                            "answer": "B"}) + "\n" for i, img, wav in rows))
    scripted_server.set_handler("vision", lambda r: Reply("Answer: (B)"))
    scripted_server.set_handler("audio", lambda r: Reply("Answer: (B)"))
    scripted_server.set_handler("merger", lambda r: Reply("<think>Bright still, steady hum.</think><answer>B</answer>"))
    out = tmp_path / "out"
    build_avrt(manifest=str(manifest), out=str(out), config=str(write_config(tmp_path / "c.yaml", scripted_server.url)))
    corpus = _corpus(out).set_index("id")
    assert list(corpus.index) == ["ok"] and len(corpus.loc["ok", "frames"]) == 1
    import soundfile

    assert abs(soundfile.info(out / corpus.loc["ok", "audio"]).duration - 10.0) < 0.05  # centred 10 s window
    rejected = _rejected(out).set_index("id")
    assert (rejected["stage"] == "media").all()
    assert "audio" in rejected.loc["bad_audio", "reason"]
    assert "not found" in rejected.loc["no_image", "reason"]


def test_regenerating_with_a_new_vision_teacher_re_asks_only_it_and_the_merger(synthetic_data, scripted_server,
                                                                               tmp_path):
    """docs/pipeline.md's recipe: swap in a registry entry (Qwen3-VL-8B-Thinking) and rerun into the same folder."""
    from tests.pipeline_helpers import question_index

    manifest, rows = numbered_manifest(synthetic_data, tmp_path, n=4)
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    for model in ("vision", "audio"):
        scripted_server.set_handler(model, teacher_handler(gold))
    scripted_server.set_handler("merger", merger_handler())

    def qwen3_vl(request):  # its published shape: the chat template opened <think>, the reply closes it
        i = question_index(request)
        return Reply(f"Got it, question {i}: let's look at the frames.\n</think>\n\nVisual Description: frames.\n\n"
                     f"Reasoning: one option fits.\n\nAnswer: ({gold[i]})")

    scripted_server.set_handler("Qwen/Qwen3-VL-8B-Thinking", qwen3_vl)
    config = write_config(tmp_path / "config.yaml", scripted_server.url)
    out = tmp_path / "out"
    build_avrt(manifest=str(manifest), out=str(out), config=str(config))
    assert {k: v for k, v in scripted_server.counts.items() if v} == {"vision": 4, "audio": 4, "merger": 4}

    scripted_server.reset_counts()
    build_avrt(manifest=str(manifest), out=str(out), config=str(config),
               overrides={"vision_teacher": "qwen3-vl-8b-thinking"})  # keeps the configured server
    calls = {k: v for k, v in scripted_server.counts.items() if v}
    assert calls == {"Qwen/Qwen3-VL-8B-Thinking": 4, "merger": 4}, "the audio teacher's answers come from the cache"
    corpus = _corpus(out)
    assert len(corpus) == 4 and (corpus["vision_model"] == "Qwen/Qwen3-VL-8B-Thinking").all()
    assert (corpus["audio_model"] == "audio").all()
