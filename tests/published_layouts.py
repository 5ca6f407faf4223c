"""Training data in each published layout (the datasets' own file names and fields), a few rows with
generated media, for the reader's tests (``corpus.published``) and the trainer's. Each writer returns
what a user passes as ``--data``:

* ``write_avqa_r1_6k(root)``: ``AVQA_R1/{train,valid}/omni_rl_format_{split}.json`` + ``images/sample_{idx}.jpg``
  + ``audios/sample_{idx}.wav`` (idx not contiguous, as published); returns ``AVQA_R1``;
* ``write_r1_aqa(root)``: ``R1-AQA/avqa_train.jsonl`` + ``R1-AQA/wavs/*.wav`` (the first row's
  ``audio_path`` absolute, the others relative to the file); returns the JSONL;
* ``write_arc_easy(root)``: ``ARC-Easy/{train,validation,test}-00000-of-00001.parquet`` (rows with
  letter and digit labels, 3, 4 and 5 options; no media); returns ``ARC-Easy``;
* ``write_avqa_annotation(root)``: AVQA's repository layout (``tests.benchmark_layouts.write_avqa``);
  returns ``AVQA/data/annotation/val_qa.json``.

With ``bad=True`` the training split also holds invalid rows, after the valid ones; ``BAD[layout]``
maps each one's place (as the reader names it) to a piece of its reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from tests.benchmark_layouts import picture, tone, write_avqa

QUESTION = "What is making the sound?"
OPTIONS = ["a guitar", "a dog barking", "a car engine", "a violin"]


def _media(cache: Path, kind: str) -> Path:
    """One generated sound (``wav``) or picture (``jpg``) per fixture folder, copied for every row."""
    path = cache / f"source.{kind}"
    if path.exists():
        return path
    return tone(path, 440) if kind == "wav" else picture(path, "blue")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# ---------------------------------------------------------------- AVQA-R1-6K (EchoInk-R1)

def r1_6k_row(idx: int, answer: int = 0) -> dict:
    """A valid AVQA-R1-6K row for source row ``idx``, as EchoInk's ``make_omniInstruct_r1_dataset.py`` writes it."""
    return {"problem_id": idx, "problem": QUESTION, "data_type": "image_audio", "problem_type": "multiple choice",
            "options": [f"{letter}. {text}" for letter, text in zip("ABCD", OPTIONS)],
            "solution": f"<answer>{'ABCD'[answer]}</answer>",
            "path": {"image": f"images/sample_{idx}.jpg", "audio": f"audios/sample_{idx}.wav"},
            "data_source": "OmniInstruct_v1-AVQA"}


def _r1_6k_bad(first: int, n: int) -> list[dict]:
    good = r1_6k_row(first + 999)
    return [
        {**good, "problem_id": 9001, "options": ["A. a guitar", "C. a dog", "B. a car", "D. a violin"]},
        {**good, "problem_id": 9002, "solution": "<answer>E</answer>"},
        {**good, "problem_id": 9003, "solution": "D"},
        {k: v for k, v in {**good, "problem_id": 9004}.items() if k != "problem"},
        {**good, "problem_id": first},
        {**good, "problem_id": 9006, "path": {"image": "images/sample_9006.jpg"}},
    ]


def write_avqa_r1_6k(root: Path, n: int = 3, bad: bool = False, valid_n: int = 2) -> Path:
    folder = Path(root) / "AVQA_R1"
    for split, count, start in (("train", n, 10), ("valid", valid_n, 7)):
        rows = [r1_6k_row(start + 3 * i, answer=i % 4) for i in range(count)]
        for row in rows:
            _copy(_media(Path(root), "wav"), folder / split / row["path"]["audio"])
            _copy(_media(Path(root), "jpg"), folder / split / row["path"]["image"])
        if bad and split == "train":
            rows += _r1_6k_bad(start, count)
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / split / f"omni_rl_format_{split}.json").write_text(json.dumps(rows, indent=2))
    return folder


# ---------------------------------------------------------------- R1-AQA's AVQA rows (Omni-R1)

def r1_aqa_row(i: int, audio_path: str) -> dict:
    name = f"clip{i:03d}_000030"
    return {"id": 200 + i, "video_name": name, "video_id": 70 + i,
            "question_text": "What is the main sound source in the video?", "multi_choice": list(OPTIONS),
            "answer": i % 4, "question_relation": "Both", "question_type": "Which", "dataset_name": "AVQA",
            "audio_path": audio_path}


def write_r1_aqa(root: Path, n: int = 3, bad: bool = False) -> Path:
    folder = Path(root) / "R1-AQA"
    lines = []
    for i in range(n):
        wav = folder / "wavs" / f"clip{i:03d}_000030.wav"
        _copy(_media(Path(root), "wav"), wav)
        lines.append(json.dumps(r1_aqa_row(i, str(wav) if i == 0 else f"wavs/{wav.name}")))
    if bad:
        good = r1_aqa_row(99, "wavs/clip000_000030.wav")
        lines += [json.dumps({**good, "id": 901, "answer": 4}),
                  json.dumps({k: v for k, v in {**good, "id": 902}.items() if k != "audio_path"}),
                  json.dumps({**good, "id": 903, "multi_choice": "guitar, dog"}),
                  '{"id": 904, "question_text": ',
                  json.dumps({**good, "id": 200})]
    path = folder / "avqa_train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- ARC-Easy (Omni-R1's text-only run)

ARC_ROWS = [
    {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite "
     "impact. Which is the most likely effect of this increase in rotation?",
     "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                          "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                 "label": ["A", "B", "C", "D"]}, "answerKey": "C"},
    {"id": "NYSEDREGENTS_2015_4_8", "question": "Which object is the best conductor of electricity?",
     "choices": {"text": ["a wax crayon", "a plastic spoon", "a rubber eraser", "an iron nail"],
                 "label": ["1", "2", "3", "4"]}, "answerKey": "4"},
    {"id": "Mercury_SC_401", "question": "Which of these is a source of light?",
     "choices": {"text": ["the Sun", "the Moon", "a mirror"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "MCAS_2004_5_9", "question": "Which gas do plants take in from the air?",
     "choices": {"text": ["oxygen", "nitrogen", "carbon dioxide", "helium", "neon"],
                 "label": ["A", "B", "C", "D", "E"]}, "answerKey": "C"},
]
ARC_GOLD = {"Mercury_7175875": "C", "NYSEDREGENTS_2015_4_8": "D", "Mercury_SC_401": "A", "MCAS_2004_5_9": "C"}


def _arc_bad() -> list[dict]:
    good = ARC_ROWS[0]
    return [{**good, "id": "bad_key", "answerKey": "E"},
            {**good, "id": "bad_question", "question": None},
            {**good, "id": "bad_labels", "choices": {"text": good["choices"]["text"], "label": ["A", "B", "C"]}}]


def write_arc_easy(root: Path, n: int = 4, bad: bool = False) -> Path:
    """``n`` train rows (the four kinds of ``ARC_ROWS`` in turn, ids made unique after the first four)."""
    folder = Path(root) / "ARC-Easy"
    folder.mkdir(parents=True, exist_ok=True)
    train = [{**ARC_ROWS[i % 4], "id": ARC_ROWS[i % 4]["id"] + (f"_{i}" if i >= 4 else "")} for i in range(n)]
    for split, rows in (("train", train + (_arc_bad() if bad else [])), ("validation", ARC_ROWS[:2]),
                        ("test", ARC_ROWS[2:])):
        pd.DataFrame(rows).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return folder


# ---------------------------------------------------------------- AVQA's own annotation (audio from the videos)

def write_avqa_annotation(root: Path, n: int = 2, bad: bool = False) -> Path:
    path = write_avqa(Path(root), n) / "data" / "annotation" / "val_qa.json"
    if bad:
        rows = json.loads(path.read_text())
        good = rows[0]
        rows += [{**good, "id": 9001, "answer": 7}, {k: v for k, v in good.items() if k != "video_name"},
                 {**good, "id": 9003, "question_text": " "}]
        path.write_text(json.dumps(rows))
    return path


# Each layout's bad rows: where the reader finds them -> a piece of the reason it gives.
BAD = {
    "avqa-r1-6k": {"entry 3": "lettered A, B, C… in order", "entry 4": "answer 'E' is not one of the options (A to D)",
                   "entry 5": "solution must be '<answer>X</answer>'", "entry 6": "missing field 'problem'",
                   "entry 7": "duplicate id '10'", "entry 8": "missing field 'path.audio'"},
    "r1-aqa": {"line 4": "answer index 4 is not one of the options", "line 5": "missing field 'audio_path'",
               "line 6": "must be a list of option texts", "line 7": "invalid JSON", "line 8": "duplicate id '200'"},
    "arc-easy": {"row 4": "answerKey 'E' is not one of the labels", "row 5": "missing field 'question'",
                 "row 6": "4 option texts but 3 labels"},
    "avqa": {"entry 2": "answer index 7 is not one of the options", "entry 3": "missing field 'video_name'",
             "entry 4": "empty 'question_text'"},
}
