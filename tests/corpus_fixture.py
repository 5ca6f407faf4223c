"""A small corpus in build-avrt's format, made from the synthetic clips (until the pipeline lands).

``write_corpus(synthetic_dir, outdir)`` extracts 8 frames and the audio of each clip with
``media``, saves them under ``outdir`` and writes ``outdir/corpus/part-0.parquet`` with the
columns the trainer reads (see HELPERS_README ``$(CORPUS)``), ``merged`` a well-formed trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from media import extract_audio, extract_frames, probe, save_audio, save_frames


def write_corpus(synthetic_dir: Path, outdir: Path, n: int | None = None) -> Path:
    rows = []
    manifest = [json.loads(line) for line in (synthetic_dir / "manifest.jsonl").read_text().splitlines() if line]
    for i, item in enumerate(manifest[:n]):
        video = synthetic_dir / item["video"]
        frames, times = extract_frames(video)
        frame_paths = save_frames(frames, outdir / "media" / item["id"] / "frames")
        audio_path = save_audio(extract_audio(video), outdir / "media" / item["id"] / "audio.wav")
        answer = item["answer"]
        rows.append({
            "id": item["id"], "split": "val" if i == len(manifest[:n]) - 1 and i > 0 else "train",
            "question": item["question"], "choices": list(item["choices"]), "answer": answer,
            "question_type": item["question_type"],
            "frames": [str(p.relative_to(outdir)) for p in frame_paths], "frame_times": list(times),
            "audio": str(audio_path.relative_to(outdir)), "duration": probe(video)["duration"],
            "merged": f"<think>The frames and the sound point to option {answer}.</think><answer>{answer}</answer>",
            "merger_kind": "concat",
        })
    (outdir / "corpus").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(outdir / "corpus" / "part-0.parquet")
    return outdir


def main() -> None:  # python -m tests.corpus_fixture SYNTHETIC_DIR OUTDIR
    import sys

    print(write_corpus(Path(sys.argv[1]), Path(sys.argv[2])))


if __name__ == "__main__":
    main()
