"""Each benchmark in its published layout: the benchmark's own file names and field names, media
made with ffmpeg (small and short). ``write_layouts(root)`` returns ``{name: folder or file}``.

* ``avqa``: ``AVQA/data/annotation/val_qa.json`` + ``AVQA/data/video/{video_name}.mp4``
* ``omnibench``: ``OmniBench/dataset/batch-5_1142_20240817.jsonl`` + ``OmniBench/mm_data/{audio,image}``
* ``omnibench_hub``: ``OmniBench-hub/data/train-0000{0,1}-of-00002.parquet`` (media bytes embedded,
  no path columns)
* ``dailyomni``: ``Daily-Omni/qa.json`` + ``Daily-Omni/Videos/{id}/{id}_video.mp4``
* ``mmar_2025``: ``MMAR/MMAR-meta.json`` (May 2025: one answer that is not a choice, as in the release)
  + ``MMAR/audio/*.wav``; ``mmar_2026``: ``MMAR-2026/MMAR-meta.jsonl`` (fixed)
* ``mmau``: ``MMAU/mmau-test-mini.json`` + ``MMAU/test-mini-audios/*.wav``
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from media.synthetic import ClipSpec, write_clip


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def tone(path: Path, hz: int, seconds: float = 1.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=16000:duration={seconds}", str(path))
    return path


def picture(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"color=c={colour}:s=96x64:d=1", "-frames:v", "1", str(path))
    return path


def clip(path: Path, colour: str) -> Path:
    return write_clip(ClipSpec(path.stem, 2.0, colour, "tone", "low", 96, 64), path)


AVQA_VIDEOS = (("-0aXnCWdnw8_000030", "red"), ("0Fk3MQ5Wfb8_000110", "blue"))


def write_avqa(root: Path, n: int = 2) -> Path:
    repo = root / "AVQA"
    rows = []
    for i in range(n):
        name, colour = AVQA_VIDEOS[i] if i < len(AVQA_VIDEOS) else (f"avqa{i:04d}_000010", ("green", "yellow")[i % 2])
        clip(repo / "data" / "video" / f"{name}.mp4", colour)
        rows.append({"id": 1000 + i, "video_name": name, "video_id": 500 + i,
                     "question_text": "What is the main sound source in the video?",
                     "multi_choice": ["guitar", "dog", "car engine", "violin"], "answer": i % 4,
                     "question_relation": "Both", "question_type": "Which"})
    (repo / "data" / "annotation").mkdir(parents=True)
    (repo / "data" / "annotation" / "val_qa.json").write_text(json.dumps(rows))
    return repo


def _omnibench_row(i: int) -> dict:
    return {"index": i, "task type": "Sound Identification", "audio type": "sound event",
            "question": "What is making the sound in the picture?",
            "options": ["A cat purring", "C major chord on a piano", "A dog barking", "Rain on a roof"],
            "answer": ["C major chord on a piano", "Rain on a roof"][i % 2],
            "audio content": "a tone", "image content": "a coloured screen"}


def write_omnibench(root: Path) -> Path:
    repo = root / "OmniBench"
    rows = []
    for i in range(2):
        tone(repo / "mm_data" / "audio" / f"omni_{i}.mp3", 300 + 200 * i)
        picture(repo / "mm_data" / "image" / f"omni_{i}.jpg", ("green", "yellow")[i])
        rows.append({**_omnibench_row(i), "audio_path": f"omni_{i}.mp3", "image_path": f"omni_{i}.jpg"})
    (repo / "dataset").mkdir(parents=True)
    (repo / "dataset" / "batch-5_1142_20240817.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return repo


def write_omnibench_hub(root: Path) -> Path:
    repo = root / "OmniBench-hub"
    media = root / "omnibench-hub-media"
    (repo / "data").mkdir(parents=True)
    for part in range(2):
        audio = tone(media / f"{part}.wav", 400 + 100 * part).read_bytes()
        image = picture(media / f"{part}.png", ("red", "blue")[part]).read_bytes()
        row = {**_omnibench_row(part), "index": 10 + part,
               "audio": {"bytes": audio, "path": None}, "image": {"bytes": image, "path": None}}
        pd.DataFrame([row]).to_parquet(repo / "data" / f"train-0000{part}-of-00002.parquet")
    return repo


def write_dailyomni(root: Path) -> Path:
    repo = root / "Daily-Omni"
    rows = []
    for k, (vid, colour) in enumerate((("vid_a1", "red"), ("vid_b2", "green"))):
        clip(repo / "Videos" / vid / f"{vid}_video.mp4", colour)
        rows.append({"Question": "Which chord is heard while the screen is shown?",
                     "Choice": ["A. A minor", "B. B flat", "C. C major", "D. D minor"], "Answer": "C",
                     "video_id": vid, "Type": "AV Event Alignment", "video_category": "Music",
                     "video_duration": "30s"})
    (repo / "qa.json").write_text(json.dumps(rows, indent=1))
    return repo


MMAR_ROWS = [
    {"id": "mmar-1", "question": "Which direction does the sound move?", "choices": ["From far to near",
     "From near to far", "Left to right", "It does not move"], "answer": "From far to near"},
    # As in the May-2025 release: the answer is two choices joined by a newline, not one of them.
    {"id": "mmar-2", "question": "Which nationality is the speaker's accent?", "choices": ["American", "Colombian",
     "British", "Indian"], "answer": "American\nColombian"},
    {"id": "mmar-3", "question": "What key is the melody in?", "choices": ["A minor", "C major", "G major",
     "E minor"], "answer": "C major"},
]


def write_mmar(root: Path, release: str) -> Path:
    repo = root / ("MMAR" if release == "2025" else "MMAR-2026")
    rows = []
    for i, row in enumerate(MMAR_ROWS):
        tone(repo / "audio" / f"{row['id']}.wav", 220 * (i + 1))
        answer = "American" if release == "2026" and row["id"] == "mmar-2" else row["answer"]
        rows.append({**row, "answer": answer, "audio_path": f"./audio/{row['id']}.wav", "modality": "sound",
                     "category": "Perception Layer", "sub-category": "Spatial", "language": "en",
                     "source": "synthetic", "url": ""})
    if release == "2025":
        (repo / "MMAR-meta.json").write_text(json.dumps(rows, indent=4))
    else:
        (repo / "MMAR-meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return repo


def write_mmau(root: Path) -> Path:
    repo = root / "MMAU"
    rows = []
    for i, (answer, choices) in enumerate((("Man", ["Man", "Woman", "Child", "Robot"]),
                                           ("C major", ["A major", "C major", "D minor", "E minor"]))):
        uid = f"mmau-{i:04d}"
        tone(repo / "test-mini-audios" / f"{uid}.wav", 500 + 100 * i)
        rows.append({"id": uid, "audio_id": f"./test-mini-audios/{uid}.wav", "question": "What is heard?",
                     "choices": choices, "answer": answer, "dataset": "synthetic", "task": "music",
                     "split": "test-mini", "category": "Key", "sub-category": "Music theory", "difficulty": "easy"})
    (repo / "mmau-test-mini.json").write_text(json.dumps(rows, indent=4))
    return repo


def write_layouts(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {"avqa": write_avqa(root), "omnibench": write_omnibench(root), "omnibench_hub": write_omnibench_hub(root),
            "dailyomni": write_dailyomni(root), "mmar_2025": write_mmar(root, "2025"),
            "mmar_2026": write_mmar(root, "2026"), "mmau": write_mmau(root)}
