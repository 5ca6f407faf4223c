"""Benchmark loaders (each published format), scoring rules, difficulty and report summaries.

No model and no media decoding here: tiny annotation files in each benchmark's format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.benchmarks import (
    BenchItem,
    BenchmarkFormatError,
    final_answer_text,
    load_avqa,
    load_benchmark,
    load_dailyomni,
    load_manifest,
    load_mmar,
    load_mmau,
    load_omnibench,
    score_output,
    strip_letter,
    token_set_match,
)
from training.eval_report import difficulty_of, load_difficulty, render_markdown, summarize


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- loaders

def test_manifest_paths_relative_to_manifest_and_image_audio_rows(tmp_path):
    path = _write(tmp_path / "m" / "manifest.jsonl", [
        {"id": "x1", "video": "videos/x1.mp4", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "C",
         "question_type": "Which"},
        {"id": "x2", "image": "img/x2.jpg", "audio": "/abs/x2.wav", "question": "Q2?", "choices": ["a", "b"],
         "answer": "B"},
    ])
    one, two = load_manifest(path)
    assert (one.id, one.answer, one.answer_text, one.category) == ("x1", "C", "c", "Which")
    assert one.video == str(tmp_path / "m" / "videos" / "x1.mp4") and one.modality == "av"
    assert two.image == str(tmp_path / "m" / "img" / "x2.jpg") and two.audio == "/abs/x2.wav"
    assert two.modality == "av" and two.video is None


@pytest.mark.parametrize("row, message", [
    ({"id": "x", "video": "v.mp4", "question": "Q", "choices": ["a", "b"], "answer": "C"}, "not one of the options"),
    ({"id": "x", "question": "Q", "choices": ["a", "b"], "answer": "A"}, "needs 'video'"),
    ({"id": "x", "video": "v.mp4", "choices": ["a", "b"], "answer": "A"}, "question"),
])
def test_manifest_rejects_bad_rows(tmp_path, row, message):
    with pytest.raises(BenchmarkFormatError, match=message):
        load_manifest(_write(tmp_path / "m.jsonl", [row]))


def test_manifest_rejects_duplicate_ids(tmp_path):
    row = {"id": "x", "video": "v.mp4", "question": "Q", "choices": ["a", "b"], "answer": "A"}
    with pytest.raises(BenchmarkFormatError, match="duplicate id"):
        load_manifest(_write(tmp_path / "m.jsonl", [row, row]))


def test_avqa_index_gold_and_video_dir(tmp_path):
    rows = [{"id": 7, "video_name": "abc_000010", "video_id": 3, "question_text": "What sounds?",
             "multi_choice": ["dog", "cat", "car", "bird"], "answer": 2, "question_relation": "Both",
             "question_type": "Come From"}]
    path = _write(tmp_path / "avqa.json", rows)
    (item,) = load_avqa(path)
    assert (item.id, item.answer, item.answer_text, item.category) == ("7", "C", "car", "Come From")
    assert item.video == str(tmp_path / "abc_000010.mp4")
    assert item.tags == {"question_relation": "Both"}
    (tmp_path / "videos").mkdir()
    assert load_avqa(path)[0].video == str(tmp_path / "videos" / "abc_000010.mp4"), "videos/ beside the JSON"
    assert load_avqa(path, tmp_path / "elsewhere")[0].video == str(tmp_path / "elsewhere" / "abc_000010.mp4")


def test_manifest_and_avqa_ids_match_the_pipeline_loader(tmp_path):
    """Difficulty joins teacher results to items by id: our ids must be build-avrt's ids."""
    from flows.manifest import load_manifest as pipeline_load

    manifest = _write(tmp_path / "m.jsonl", [{"id": f"c{i}", "video": f"v/{i}.mp4", "question": "Q",
                                              "choices": ["a", "b", "c", "d"], "answer": "A"} for i in range(3)])
    avqa = _write(tmp_path / "a.json", [{"id": i, "video_name": f"v{i}", "question_text": "Q",
                                         "multi_choice": ["a", "b", "c", "d"], "answer": 1} for i in range(3)])
    for path, ours in ((manifest, load_manifest(manifest)), (avqa, load_avqa(avqa, tmp_path))):
        theirs = pipeline_load(path, video_dir=tmp_path)
        assert [i.id for i in ours] == [s.id for s in theirs]
        assert [i.answer for i in ours] == [s.answer for s in theirs]
        assert [i.video for i in ours] == [s.video for s in theirs]


def _omnibench_row(index: int, options: list[str], answer: str) -> dict:
    return {"index": index, "task type": "Plot Inference", "audio type": "speech", "question": "What happens?",
            "options": options, "answer": answer, "audio_path": f"{index}.mp3", "image_path": f"{index}.jpg",
            "audio content": "...", "image content": "..."}


def test_omnibench_gold_is_the_option_index_of_the_answer_text(tmp_path):
    # Options that look lettered fool a letter parser; the gold is where the answer text sits.
    rows = [_omnibench_row(0, ["C. elegans moves", "A cat purrs", "Bees buzz", "D-Day speech"], "A cat purrs"),
            _omnibench_row(1, ["one", "two", "three", "four"], "  Four ")]
    root = tmp_path / "OmniBench"
    path = _write(root / "dataset" / "batch.jsonl", rows)
    (root / "mm_data" / "audio").mkdir(parents=True)
    (root / "mm_data" / "audio" / "0.mp3").write_bytes(b"x")
    first, second = load_omnibench(path)
    assert first.answer == "B" and first.answer_text == "A cat purrs"
    assert second.answer == "D", "whitespace/case-folded match when not exact"
    assert first.audio == str(root / "mm_data" / "audio" / "0.mp3"), "found under mm_data/ of the parent"
    assert first.image.endswith("0.jpg") and first.modality == "av"
    assert (first.category, first.tags) == ("Plot Inference", {"audio type": "speech"})


def test_omnibench_answer_not_among_options_is_an_error(tmp_path):
    path = _write(tmp_path / "o.jsonl", [_omnibench_row(0, ["a", "b", "c", "d"], "e")])
    with pytest.raises(BenchmarkFormatError, match="not exactly one of the options"):
        load_omnibench(path)


def test_dailyomni_strips_letters_and_finds_videos(tmp_path):
    rows = [{"Question": "What is heard first?", "Choice": ["A. A dog", "B. Rain", "C. C-major chord", "D. Speech"],
             "Answer": "C", "video_id": "vid1", "Type": "Event Sequence", "video_category": "Pets",
             "video_duration": "30s"},
            {"Question": "Why?", "Choice": ["A.x", "B.y", "C.z", "D.w"], "Answer": "A", "video_id": "vid1",
             "Type": "Reasoning", "video_duration": "30s"}]
    path = _write(tmp_path / "qa.json", rows)
    (tmp_path / "Videos" / "vid1").mkdir(parents=True)
    (tmp_path / "Videos" / "vid1" / "vid1_audio.wav").write_bytes(b"x")
    first, second = load_dailyomni(path)
    assert first.choices == ("A dog", "Rain", "C-major chord", "Speech")
    assert second.choices == ("x", "y", "z", "w")
    assert (first.answer, first.category) == ("C", "Event Sequence")
    assert first.video == str(tmp_path / "Videos" / "vid1" / "vid1_video.mp4")
    assert first.audio == str(tmp_path / "Videos" / "vid1" / "vid1_audio.wav"), "the released audio track"
    assert (first.id, second.id) == ("vid1#0", "vid1#1")
    assert first.tags == {"video_duration": "30s", "video_category": "Pets"}


def test_strip_letter_only_strips_the_expected_letter():
    assert strip_letter("A. a dog", "A") == "a dog"
    assert strip_letter("(B) rain", "B") == "rain"
    assert strip_letter("A cat purrs", "A") == "A cat purrs"
    assert strip_letter("B. rain", "A") == "B. rain"


def test_mmar_and_mmau_gold_from_option_text_audio_only(tmp_path):
    mmar = _write(tmp_path / "MMAR-meta.json", [
        {"id": "m1", "audio_path": "./audio/m1.wav", "question": "Which instrument?", "choices": ["Piano", "Violin"],
         "answer": "Violin", "modality": "music", "category": "Perception Layer", "sub-category": "Timbre",
         "language": "en"}])
    (item,) = load_mmar(mmar)
    assert (item.answer, item.category, item.modality) == ("B", "Perception Layer", "a")
    assert item.audio == str(tmp_path / "audio" / "m1.wav")
    assert item.tags == {"modality": "music", "sub-category": "Timbre"}
    mmau = _write(tmp_path / "mmau.json", [
        {"id": "u1", "audio_id": "./test-mini-audios/u1.wav", "question": "What?", "choices": ["a", "b", "c"],
         "answer": "c", "task": "sound", "difficulty": "easy", "sub-category": "x", "dataset": "d"}])
    (u,) = load_mmau(mmau)
    assert (u.answer, u.category, u.tags["difficulty"]) == ("C", "sound", "easy")
    assert load_benchmark("mmar", mmar)[0] == item
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("nope", mmar)


def test_omnibench_parquet_with_embedded_media(tmp_path):
    row = _omnibench_row(0, ["a", "b", "c", "d"], "c")
    row["audio"] = {"bytes": b"RIFFfake", "path": "0.mp3"}
    row["image"] = {"bytes": b"\xff\xd8jpeg", "path": "0.jpg"}
    pd.DataFrame([row]).to_parquet(tmp_path / "o.parquet")
    (item,) = load_omnibench(tmp_path / "o.parquet")
    assert item.answer == "C" and item.choices == ("a", "b", "c", "d")
    assert Path(item.audio).read_bytes() == b"RIFFfake" and Path(item.image).read_bytes() == b"\xff\xd8jpeg"
    assert load_omnibench(tmp_path / "o.parquet") == [item], "written once, found again"


# ---------------------------------------------------------------- scoring

def test_token_set_match_is_the_official_rule():
    choices = ["dog barking", "cat barking", "a car horn", "silence"]
    assert token_set_match("dog barking", "Dog barking.", choices)
    assert token_set_match("dog barking", "the dog barking loudly", choices), "extra words allowed"
    assert not token_set_match("dog barking", "dog or cat barking", choices), "a wrong option's word"
    assert not token_set_match("dog barking", "barking", choices), "all gold tokens needed"
    assert not token_set_match("dog barking", "", choices)
    assert token_set_match("a car horn", "car horn, a", choices), "a set, not a sequence"


def _item(choices=("dog barking", "cat meowing", "car horn", "rain"), answer="A") -> BenchItem:
    return BenchItem(id="i", question="What?", choices=tuple(choices), answer=answer, audio="x.wav")


def test_letter_scoring_reads_the_answer_with_the_shared_parser():
    item = _item(answer="B")
    right = score_output(item, "<think>It meows.</think><answer>B</answer>", "letter")
    assert right.correct and right.letter == "B"
    wrong = score_output(item, "<think>Woof.</think><answer>A</answer>", "letter")
    assert not wrong.correct and wrong.letter == "A"
    unparsed = score_output(item, "<think>never closed", "letter")
    assert unparsed.letter is None and not unparsed.correct and unparsed.parse_reason


def test_token_set_scoring_compares_option_text_not_letters():
    # Two options share every token with different order; letters must map to the option text.
    item = _item(choices=("cat and dog", "dog only", "cat only", "bird"), answer="A")
    assert score_output(item, "<think>x</think><answer>A</answer>", "token_set").correct
    result = score_output(item, "<think>x</think><answer>B</answer>", "token_set")
    assert not result.correct and result.prediction == "dog only"


def test_final_answer_text():
    assert final_answer_text("<think>a</think><answer> dog barking </answer>") == "dog barking"
    assert final_answer_text("<think>a</think>It is rain.") == "It is rain."
    assert final_answer_text("<think>never closed") == ""


# ---------------------------------------------------------------- difficulty and report

def test_difficulty_counts_right_teachers():
    assert difficulty_of("A", "a", "A") == "easy"
    assert difficulty_of("A", "B", "A") == "medium"
    assert difficulty_of(None, "A", "A") == "medium"
    assert difficulty_of("B", None, "A") == "hard"


def _teacher_row(i, v, a, gold="A", raw="r"):
    return {"id": f"q{i}", "vision_answer": v, "audio_answer": a, "answer": gold, "vision_raw": raw, "audio_raw": raw}


def test_load_difficulty_from_build_outdir_and_jsonl(tmp_path):
    out = tmp_path / "build"
    (out / "corpus").mkdir(parents=True)
    (out / "rejected").mkdir()
    pd.DataFrame([_teacher_row(0, "A", "A")]).to_parquet(out / "corpus" / "part-0.parquet")
    pd.DataFrame([_teacher_row(1, "B", "A"), _teacher_row(2, "B", None),
                  _teacher_row(3, None, None, raw=None)]).to_parquet(out / "rejected" / "part-0.parquet")
    assert load_difficulty(out) == {"q0": "easy", "q1": "medium", "q2": "hard"}, "q3: teachers never asked"
    jsonl = _write(tmp_path / "t.jsonl", [{"id": "q9", "vision_answer": "C", "audio_answer": "D", "answer": "D"}])
    assert load_difficulty(jsonl) == {"q9": "medium"}


def _row(i, modality, correct, letter="A", category="c1", error=None, reason=""):
    return {"id": f"q{i}", "modality": modality, "correct": correct, "letter": letter, "category": category,
            "tags": {"audio type": "speech" if i % 2 else "music"}, "error": error, "parse_reason": reason}


def test_summary_accuracy_breakdowns_and_markdown():
    rows = [_row(0, "av", True), _row(1, "av", False, letter=None, reason="no answer found (text ends 'x')"),
            _row(2, "av", False, letter=None, category="c2", error="audio: no audio track"),
            _row(3, "av", True, category="c2"),
            _row(0, "a", False, letter="B"), _row(1, "a", True)]
    report = summarize(rows, {"benchmark": "omnibench", "decoding": {"strategy": "greedy"}},
                       difficulty={"q0": "easy", "q1": "hard", "q3": "hard"}, difficulty_source="t.jsonl")
    av, a = report["settings"]["av"], report["settings"]["a"]
    assert list(report["settings"]) == ["av", "a"]
    assert (av["n"], av["correct"], av["accuracy"]) == (4, 2, 0.5)
    assert av["media_errors"] == 1 and av["accuracy_excluding_media_errors"] == round(2 / 3, 4)
    assert av["parse_failures"] == 1 and av["parse_failure_rate"] == round(1 / 3, 4)
    assert av["parse_failure_reasons"] == {"no answer found": 1}
    assert av["per_category"] == {"c1": {"n": 2, "correct": 1, "accuracy": 0.5},
                                  "c2": {"n": 2, "correct": 1, "accuracy": 0.5}}
    assert av["per_tag"]["audio type"]["music"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert av["per_difficulty"]["hard"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert av["per_difficulty"]["unknown"]["n"] == 1
    assert a["accuracy"] == 0.5 and a["parse_failures"] == 0
    assert report["difficulty"] == {"source": "t.jsonl", "matched": 3, "unmatched": 1,
                                    "counts": {"easy": 1, "hard": 2}}
    md = render_markdown(report)
    for needle in ("| av (audio + visual) | 4 | 50.0 |", "## Accuracy per category", "## Accuracy per difficulty",
                   "| hard | 50.0 (2) |", "greedy", "no answer found (1)"):
        assert needle in md, needle
