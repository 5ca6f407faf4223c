"""The synthetic clips decode, have audio, and give the conventional frames and audio."""

from __future__ import annotations

import json

import numpy as np

from media import MediaSettings, extract_audio, extract_frames, probe


def test_synthetic_clips_decode_and_have_audio(synthetic_data):
    rows = [json.loads(l) for l in (synthetic_data / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["answer"] for r in rows} <= set("ABCD")
    for row in rows:
        path = synthetic_data / row["video"]
        info = probe(path)
        assert info["has_video"] and info["has_audio"] and info["duration"] > 2.5
        frames, times = extract_frames(path)
        assert frames.shape == (8, 240, 320, 3) and frames.dtype == np.uint8
        assert times == sorted(times) and times[-1] < info["duration"]
        audio = extract_audio(path)
        assert audio.dtype == np.float32 and np.abs(audio).max() > 0.01
        assert abs(len(audio) / 16000 - min(10.0, info["duration"])) < 0.1


def test_colour_is_visible_in_frames(synthetic_data):
    row = json.loads((synthetic_data / "manifest.jsonl").read_text().splitlines()[0])
    frames, _ = extract_frames(synthetic_data / row["video"])
    gold = row["choices"]["ABCD".index(row["answer"])]
    corner = frames[:, :20, :20].reshape(-1, 3).mean(axis=0)
    expected = {"red": 0, "green": 1, "blue": 2}
    if gold in expected:
        assert int(np.argmax(corner)) == expected[gold]


def test_downscale_keeps_aspect(synthetic_data):
    frames, _ = extract_frames(synthetic_data / "odd" / "portrait.mp4", MediaSettings(max_side=160))
    assert frames.shape[1:3] == (160, 90)
