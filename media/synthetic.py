"""Synthetic audio-visual multiple-choice samples, written with ffmpeg, for tests and the demo.

``python -m media.synthetic --out outputs/synthetic --n 12 [--odd]`` writes

* ``videos/*.mp4``: clips of a coloured screen with one sound (a pure tone, white noise or a rising
  chirp, at a low, middle or high pitch), 3 to 12 s long, H.264 + AAC;
* ``manifest.jsonl``: the project's manifest (``id, video, question, choices, answer`` A-D,
  ``question_type``), with video paths relative to the manifest;
* ``avqa.json``: the same questions in AVQA's annotation format (``video_name`` without extension,
  ``multi_choice``, ``answer`` as a 0-based index), to use with ``--video-dir videos``;
* with ``--task av``: the demo's colour x pitch task (``media.av_task``) in ``manifest_train.jsonl``
  and ``manifest_test.jsonl`` instead of the files above;
* with ``--odd``: ``odd/`` clips that are valid but unusual (VP9/Opus webm, 48 kHz stereo, portrait,
  3 s) or broken (no audio track, no video stream, corrupt bytes, a missing file), listed in
  ``odd_manifest.jsonl`` with the expected outcome in ``expect`` (``ok`` or the media error).

Answers are determined by the content (colour of the screen, pitch of the tone, kind of sound), so
a capable model could answer them; the order of choices is shuffled with the seed.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

COLOURS = {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"}
PITCHES = {"low": 220, "middle": 660, "high": 1760}
SOUNDS = {"white noise": "noise", "a rising chirp": "chirp", "a steady tone": "tone"}
LENGTHS = [3.0, 6.0, 10.0, 12.0]


@dataclass(frozen=True)
class ClipSpec:
    name: str
    seconds: float
    colour: str
    sound: str  # "tone" | "noise" | "chirp"
    pitch: str
    width: int = 320
    height: int = 240
    detune: float = 1.0  # the tone's frequency is the pitch's times this
    box_offset: int = 0  # pixels the moving test pattern starts from


def _audio_input(spec: ClipSpec, rate: int = 44_100):
    d = spec.seconds
    if spec.sound == "noise":
        return ffmpeg.input(f"anoisesrc=color=white:amplitude=0.3:sample_rate={rate}:duration={d}", f="lavfi")
    if spec.sound == "chirp":
        expr = "0.4*sin(2*PI*(200+150*t)*t)"
        return ffmpeg.input(f"aevalsrc={expr}:s={rate}:d={d}", f="lavfi")
    frequency = round(PITCHES[spec.pitch] * spec.detune, 1)
    return ffmpeg.input(f"sine=frequency={frequency}:sample_rate={rate}:duration={d}", f="lavfi")


def _video_input(spec: ClipSpec, fps: int = 25):
    size = f"{spec.width}x{spec.height}"
    base = ffmpeg.input(f"color=c={COLOURS[spec.colour]}:s={size}:r={fps}:d={spec.seconds}", f="lavfi")
    # A small moving test pattern keeps the frames from being trivially identical.
    box = ffmpeg.input(f"testsrc2=s=64x48:r={fps}:d={spec.seconds}", f="lavfi")
    return ffmpeg.overlay(base, box, x=f"mod({spec.box_offset}+t*40,W-w)", y="(H-h)/2")


def write_clip(spec: ClipSpec, path: Path, *, video: bool = True, audio: bool = True, container: str = "mp4",
               audio_rate: int = 44_100, channels: int = 1) -> Path:
    """Render one clip with ffmpeg; ``video``/``audio`` switch the streams off for broken cases."""
    path.parent.mkdir(parents=True, exist_ok=True)
    streams, options = [], {"t": spec.seconds}
    if video:
        streams.append(_video_input(spec))
        if container == "webm":
            options.update(vcodec="libvpx-vp9", deadline="realtime", **{"cpu-used": 8, "b:v": "200k"})
        else:
            options.update(vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p")
    if audio:
        streams.append(_audio_input(spec, audio_rate))
        options.update(acodec="libopus" if container == "webm" else "aac", ac=channels, ar=audio_rate)
    ffmpeg.output(*streams, str(path), **options).overwrite_output().run(quiet=True)
    return path


def _question(spec: ClipSpec, kind: str, rng: random.Random) -> tuple[str, list[str], str, str]:
    """Return (question, choices, correct choice text, question_type)."""
    if kind == "visual":
        options = list(COLOURS)
        question, correct, qtype = "What colour fills most of the screen?", spec.colour, "Which"
    elif kind == "audio":
        if spec.sound == "tone":
            options = ["a low hum", "a middle-pitched beep", "a high whistle", "complete silence"]
            correct = {"low": options[0], "middle": options[1], "high": options[2]}[spec.pitch]
            question = "How would you describe the pitch of the sound?"
        else:
            options = list(SOUNDS) + ["human speech"]
            correct = next(k for k, v in SOUNDS.items() if v == spec.sound)
            question = "What kind of sound plays during the video?"
        qtype = "Come From"
    else:
        sound = next(k for k, v in SOUNDS.items() if v == spec.sound)
        correct = f"a {spec.colour} screen with {sound}"
        others = [c for c in COLOURS if c != spec.colour]
        options = [correct] + [f"a {c} screen with {rng.choice(list(SOUNDS))}" for c in rng.sample(others, 3)]
        question, qtype = "Which description matches both what you see and what you hear?", "Happening"
    rng.shuffle(options)
    return question, options, correct, qtype


def make_specs(n: int, seed: int = 0) -> list[ClipSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        sound = ["tone", "noise", "chirp"][i % 3]
        specs.append(
            ClipSpec(
                name=f"syn{i:04d}_{i * 10:06d}",
                seconds=LENGTHS[i % len(LENGTHS)],
                colour=rng.choice(list(COLOURS)),
                sound=sound,
                pitch=rng.choice(list(PITCHES)),
            )
        )
    return specs


def write_dataset(out: Path, n: int = 12, seed: int = 0, odd: bool = False) -> Path:
    """Write clips, ``manifest.jsonl`` and ``avqa.json`` under ``out``; return the manifest path."""
    out = Path(out)
    rng = random.Random(seed + 1)
    manifest, avqa = [], []
    for i, spec in enumerate(make_specs(n, seed)):
        video = write_clip(spec, out / "videos" / f"{spec.name}.mp4")
        kind = ["visual", "audio", "audio-visual"][i % 3]
        question, choices, correct, qtype = _question(spec, kind, rng)
        answer = choices.index(correct)
        manifest.append({"id": spec.name, "video": str(video.relative_to(out)), "question": question,
                         "choices": choices, "answer": "ABCD"[answer], "question_type": qtype})
        avqa.append({"id": i, "video_name": spec.name, "video_id": i, "question_text": question,
                     "multi_choice": choices, "answer": answer, "question_relation": "Both",
                     "question_type": qtype})
    _write_jsonl(out / "manifest.jsonl", manifest)
    (out / "avqa.json").write_text(json.dumps(avqa, indent=1))
    if odd:
        write_odd_clips(out)
    return out / "manifest.jsonl"


def write_av_dataset(out: Path, n: int = 40, seed: int = 0, seconds: float = 3.0,
                     test_fraction: float = 0.25) -> dict[str, Path]:
    """Render the demo's AV task (``media.av_task``): clips plus ``manifest_train/test.jsonl``.

    Each clip is a coloured screen with a pure tone (slightly detuned, its moving pattern shifted, per
    clip); the answer needs both. Returns split -> manifest.
    """
    from media.av_task import make_items

    out = Path(out)
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for item in make_items(n, seed, test_fraction):
        spec = ClipSpec(name=item.id, seconds=seconds, colour=item.colour, sound="tone", pitch=item.pitch,
                        detune=item.detune, box_offset=item.box_offset)
        video = write_clip(spec, out / "videos" / f"{item.id}.mp4")
        rows[item.split].append(item.manifest_row(str(video.relative_to(out))))
    paths = {split: out / f"manifest_{split}.jsonl" for split in rows}
    for split, path in paths.items():
        _write_jsonl(path, rows[split])
    return paths


def write_odd_clips(out: Path) -> Path:
    """Valid-but-unusual and broken clips with the outcome the pipeline should reach."""
    odd = out / "odd"
    base = ClipSpec(name="odd", seconds=4.0, colour="green", sound="tone", pitch="high")
    cases = [
        ("webm_vp9", write_clip(base, odd / "webm_vp9.webm", container="webm", audio_rate=48_000, channels=2), "ok"),
        ("stereo_48k", write_clip(base, odd / "stereo_48k.mp4", audio_rate=48_000, channels=2), "ok"),
        ("portrait", write_clip(ClipSpec("p", 4.0, "green", "tone", "high", 180, 320), odd / "portrait.mp4"), "ok"),
        ("short_3s", write_clip(ClipSpec("s", 3.0, "green", "tone", "high"), odd / "short_3s.mp4"), "ok"),
        ("no_audio", write_clip(base, odd / "no_audio.mp4", audio=False), "no audio track"),
        ("no_video", write_clip(base, odd / "no_video.m4a", video=False), "no video stream"),
    ]
    corrupt = odd / "corrupt.mp4"
    corrupt.write_bytes(random.Random(7).randbytes(4096))
    cases += [("corrupt", corrupt, "unreadable media"), ("missing", odd / "missing.mp4", "file not found")]
    rows = [{"id": name, "video": str(path.relative_to(out)), "question": "What colour fills most of the screen?",
             "choices": list(COLOURS), "answer": "B", "question_type": "Which", "expect": expect}
            for name, path, expect in cases]
    _write_jsonl(out / "odd_manifest.jsonl", rows)
    return out / "odd_manifest.jsonl"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m media.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/synthetic"), help="output directory")
    parser.add_argument("--n", type=int, default=12, help="number of regular clips")
    parser.add_argument("--seed", type=int, default=0, help="seed for colours, pitches and choice order")
    parser.add_argument("--odd", action="store_true", help="also write odd and broken clips under odd/")
    parser.add_argument("--task", choices=["mixed", "av"], default="mixed",
                        help="mixed: the test clips above; av: the demo's colour x pitch task with train/test splits")
    args = parser.parse_args(argv)
    if args.task == "av":
        paths = write_av_dataset(args.out, args.n, args.seed)
        print(f"wrote {args.n} clips and " + ", ".join(str(p) for p in paths.values()))
        return
    manifest = write_dataset(args.out, args.n, args.seed, args.odd)
    print(f"wrote {args.n} clips and {manifest}")


if __name__ == "__main__":
    main()
