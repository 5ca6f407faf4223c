"""Synthetic audio-visual multiple-choice samples, written with ffmpeg, for tests and the demo.

``python -m media.synthetic --out outputs/synthetic --n 12 [--odd]`` writes

* ``videos/*.mp4``: clips of a coloured screen with one sound (a pure tone, white noise or a rising
  chirp, at a low, middle or high pitch), 3 to 12 s long, H.264 + AAC;
* ``manifest.jsonl``: the project's manifest (``id, video, question, choices, answer`` A-D,
  ``question_type``), with video paths relative to the manifest;
* ``avqa.json``: the same questions in AVQA's annotation format (``video_name`` without extension,
  ``multi_choice``, ``answer`` as a 0-based index), to use with ``--video-dir videos``;
* with ``--odd``: ``odd/`` clips that are valid but unusual (VP9/Opus webm, 48 kHz stereo, portrait,
  3 s) or broken (no audio track, no video stream, corrupt bytes, a missing file), listed in
  ``odd_manifest.jsonl`` with the expected outcome in ``expect`` (``ok`` or the media error).

Answers are determined by the content (colour of the screen, pitch of the tone, kind of sound), so
a capable model could answer them; the order of choices is shuffled with the seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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


def _lavfi_graph(spec: ClipSpec, audio_rate: int = 44_100, fps: int = 25) -> str:
    """One lavfi source graph for the clip: video on ``[out0]``, audio on ``[out1]``."""
    d = spec.seconds
    if spec.sound == "noise":
        audio = f"anoisesrc=color=white:amplitude=0.3:sample_rate={audio_rate}:duration={d}"
    elif spec.sound == "chirp":
        audio = f"aevalsrc=0.4*sin(2*PI*(200+150*t)*t):s={audio_rate}:d={d}"
    else:
        audio = f"sine=frequency={round(PITCHES[spec.pitch] * spec.detune, 1)}:sample_rate={audio_rate}:duration={d}"
    # a small moving test pattern keeps the frames from being trivially identical
    return (f"color=c={COLOURS[spec.colour]}:s={spec.width}x{spec.height}:r={fps}:d={d}[screen];"
            f"testsrc2=s=64x48:r={fps}:d={d}[pattern];"
            f"[screen][pattern]overlay=x='mod({spec.box_offset}+t*40,W-w)':y=(H-h)/2[out0];{audio}[out1]")


def _output_args(index: int, spec: ClipSpec, path: Path, *, video: bool = True, audio: bool = True,
                 container: str = "mp4", audio_rate: int = 44_100, channels: int = 1) -> list[str]:
    """ffmpeg output options writing input ``index``'s streams to ``path``."""
    args: list[str] = []
    if video:
        args += ["-map", f"{index}:v"]
        args += (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"] if container == "webm"
                 else ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
    if audio:
        args += ["-map", f"{index}:a", "-c:a", "libopus" if container == "webm" else "aac", "-ac", str(channels),
                 "-ar", str(audio_rate)]
    return args + ["-t", str(spec.seconds), str(path)]


def _ffmpeg(inputs: list[str], outputs: list[str]) -> None:
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error"] + [a for g in inputs for a in ("-f", "lavfi", "-i", g)] + outputs
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.strip()[-2000:]}")


def write_clip(spec: ClipSpec, path: Path, *, video: bool = True, audio: bool = True, container: str = "mp4",
               audio_rate: int = 44_100, channels: int = 1) -> Path:
    """Render one clip with ffmpeg; ``video``/``audio`` switch the streams off for broken cases."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg([_lavfi_graph(spec, audio_rate)], _output_args(0, spec, path, video=video, audio=audio, container=container,
                                                           audio_rate=audio_rate, channels=channels))
    return path


def write_clips(specs: list[ClipSpec], folder: Path, processes: int | None = None, per_process: int = 40) -> list[Path]:
    """Render ``folder/{spec.name}.mp4`` (H.264 + AAC) for every spec, a batch of clips per ffmpeg
    process and one process per core at a time: starting ffmpeg costs more than encoding a short clip."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{spec.name}.mp4" for spec in specs]
    batches = [list(range(i, min(i + per_process, len(specs)))) for i in range(0, len(specs), per_process)]

    def render(batch: list[int]) -> None:
        _ffmpeg([_lavfi_graph(specs[i]) for i in batch],
                [a for k, i in enumerate(batch) for a in _output_args(k, specs[i], paths[i])])

    with ThreadPoolExecutor(processes or os.cpu_count() or 1) as pool:
        list(pool.map(render, batches))
    return paths


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


def make_specs(n: int, seed: int = 0, seconds: float | None = None,
               size: tuple[int, int] | None = None) -> list[ClipSpec]:
    """``n`` clip specs; their lengths cycle through ``LENGTHS`` unless ``seconds`` gives one length;
    ``size``: (width, height) instead of the default 320x240."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        sound = ["tone", "noise", "chirp"][i % 3]
        specs.append(
            ClipSpec(
                name=f"syn{i:04d}_{i * 10:06d}",
                seconds=seconds or LENGTHS[i % len(LENGTHS)],
                colour=rng.choice(list(COLOURS)),
                sound=sound,
                pitch=rng.choice(list(PITCHES)),
                **({"width": size[0], "height": size[1]} if size else {}),
            )
        )
    return specs


def write_dataset(out: Path, n: int = 12, seed: int = 0, odd: bool = False, seconds: float | None = None,
                  size: tuple[int, int] | None = None) -> Path:
    """Write clips (of ``seconds`` each, else of ``LENGTHS``; of ``size``), ``manifest.jsonl`` and
    ``avqa.json`` under ``out``; return the manifest path."""
    out = Path(out)
    rng = random.Random(seed + 1)
    manifest, avqa = [], []
    specs = make_specs(n, seed, seconds, size)
    for i, (spec, video) in enumerate(zip(specs, write_clips(specs, out / "videos"))):
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
    args = parser.parse_args(argv)
    manifest = write_dataset(args.out, args.n, args.seed, args.odd)
    print(f"wrote {args.n} clips and {manifest}")


if __name__ == "__main__":
    main()
