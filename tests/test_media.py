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
    from media.synthetic import make_specs

    rgb = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}  # ffmpeg's names
    specs = make_specs(6, seed=0)  # the fixture's clips
    assert len({s.colour for s in specs}) > 1
    for spec in specs:
        frames, _ = extract_frames(synthetic_data / "videos" / f"{spec.name}.mp4")
        corner = frames[:, :20, :20].reshape(-1, 3).mean(axis=0)
        nearest = min(rgb, key=lambda name: float(np.sum((corner - np.array(rgb[name])) ** 2)))
        assert nearest == spec.colour, (spec.name, corner)


def test_downscale_keeps_aspect(synthetic_data):
    frames, _ = extract_frames(synthetic_data / "odd" / "portrait.mp4", MediaSettings(max_side=160))
    assert frames.shape[1:3] == (160, 90)


def test_one_loader_for_videos_and_image_audio_pairs(synthetic_data, tmp_path, monkeypatch):
    import soundfile as sf
    from PIL import Image

    import media.extract as extract
    from media import load_clip

    clip = load_clip(synthetic_data / "videos" / "syn0001_000010.mp4", settings=MediaSettings(max_side=160))
    assert clip.error() is None and clip.frames.shape[0] == 8 and len(clip.frame_times) == 8
    assert clip.frames_are_video and clip.audio.dtype == np.float32 and clip.duration > 0
    # a clip without sound: the pipeline (all or nothing) decodes no frame; evaluation keeps the frames
    decoded = []
    real = extract.extract_frames
    monkeypatch.setattr(extract, "extract_frames", lambda *a, **k: decoded.append(a) or real(*a, **k))
    silent = synthetic_data / "odd" / "no_audio.mp4"
    assert load_clip(silent, all_or_nothing=True).error() == "no audio track" and decoded == []
    partial = load_clip(silent)
    assert partial.frames is not None and partial.audio_error == "no audio track" and len(decoded) == 1
    # an image + audio pair: one frame, the audio's centred window
    Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(tmp_path / "still.png")
    sf.write(tmp_path / "tone.wav", np.zeros(16_000 * 3, np.float32), 16_000)
    pair = load_clip(image=tmp_path / "still.png", audio=tmp_path / "tone.wav")
    assert pair.frames.shape == (1, 30, 40, 3) and not pair.frames_are_video and pair.duration == 3.0
    assert load_clip(image=tmp_path / "nope.png", audio=tmp_path / "tone.wav").frames_error.startswith("file not found")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert load_clip(image=tmp_path / "bad.png", audio=tmp_path / "tone.wav", all_or_nothing=True).error() == "unreadable image"
