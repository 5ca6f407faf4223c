"""Benchmark loaders (each published format and layout), scoring rules, difficulty and report summaries.

No model and no media decoding here: tiny annotation files in each benchmark's format, and each
benchmark in its published layout (``tests/benchmark_layouts.py``, media made with ffmpeg).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from evaluation.benchmarks import (
    BenchmarkFormatError,
    check_media_found,
    load_avqa,
    load_benchmark,
    load_dailyomni,
    load_manifest,
    load_mmar,
    load_mmau,
    load_omnibench,
    resolve_data,
    strip_letter,
)
from evaluation.report import difficulty_of, load_difficulty, render_markdown, summarize
from evaluation.scoring import (
    OFFICIAL_RULE,
    choose_option,
    echoink_letter,
    final_answer_text,
    score_output,
    token_set_match,
)
from tests.benchmark_layouts import write_layouts


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
    from corpus.manifest import load_manifest as pipeline_load

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


def test_omnibench_answer_not_among_options_is_unscorable_not_an_error(tmp_path):
    path = _write(tmp_path / "o.jsonl", [_omnibench_row(0, ["a", "b", "c", "d"], "e")])
    (item,) = load_omnibench(path)
    assert item.answer is None and not item.scorable and item.answer_text == "e"


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


def _score(output, choices, gold, rule, gold_text=None):
    gold_text = gold_text if gold_text is not None else choices["ABCD".index(gold)]
    return score_output(output, choices, gold, gold_text, rule)


def test_letter_scoring_reads_the_answer_with_the_shared_parser():
    choices = ("dog barking", "cat meowing", "car horn", "rain")
    right = _score("<think>It meows.</think><answer>B</answer>", choices, "B", "letter")
    assert right.correct and right.correct_official and right.letter == "B"
    wrong = _score("<think>Woof.</think><answer>A</answer>", choices, "B", "letter")
    assert wrong.correct is False and not wrong.correct_official and wrong.letter == "A"
    unparsed = _score("<think>never closed", choices, "B", "letter")
    assert unparsed.letter is None and unparsed.correct is False and unparsed.parse_reason


def test_token_set_official_compares_option_text_exact_compares_the_option():
    choices = ("cat and dog", "dog only", "cat only", "bird")
    assert _score("<think>x</think><answer>A</answer>", choices, "A", "token_set").correct_official
    result = _score("<think>x</think><answer>B</answer>", choices, "A", "token_set")
    assert not result.correct_official and result.official_prediction == "dog only" and result.correct is False


def test_option_text_answer_is_its_option_never_a_letter():
    choices = ["A major", "C major", "D minor", "E minor"]
    assert choose_option("<answer>C major</answer>", choices).letter == "B"
    assert choose_option("<think>hm</think>**c  MAJOR.**", choices).letter == "B"
    assert choose_option("<answer>C</answer>", choices).letter == "C", "a bare letter is a letter"
    assert choose_option("<answer>(C)</answer>", choices).letter == "C"
    assert choose_option("<answer>C major or D minor</answer>", choices).letter != "B"


# One output per kind, scored for a gold option whose text starts with a letter and shares every
# word with a wrong option. exact / official per benchmark; None = unscorable.
SCORING_TABLE = [
    # output,                                    gold,  exact, letter-official, token-set-official
    ("<think>t</think><answer>B</answer>",          "B", True, True, True),    # right letter
    ("<think>t</think><answer>C major</answer>",    "B", True, False, False),  # gold text read as letter C
    ("<think>t</think><answer>A</answer>",          "C", False, False, True),  # wrong option, same words
    ("<think>t</think><answer>From near to far</answer>", "C", False, False, True),  # same, as text
    ("<think>t</think><answer>From far to near</answer>", "C", True, True, True),  # gold as text
    ("<think>t</think><answer>D</answer>",          "B", False, False, False),  # plainly wrong
]
TABLE_CHOICES = {"B": ["From near to far", "C major", "From far to near", "G minor"],
                 "C": ["From near to far", "C major", "From far to near", "G minor"]}


@pytest.mark.parametrize("benchmark", ["avqa", "omnibench", "dailyomni", "mmar", "mmau"])
@pytest.mark.parametrize("output, gold, exact, letter_official, token_official", SCORING_TABLE)
def test_scoring_table_per_benchmark(benchmark, output, gold, exact, letter_official, token_official):
    choices = TABLE_CHOICES[gold]
    result = _score(output, choices, gold, OFFICIAL_RULE[benchmark])
    assert result.correct is exact
    assert result.correct_official is (token_official if OFFICIAL_RULE[benchmark] == "token_set" else letter_official)


# EchoInk-R1's extract_choice: the first <answer> holding one letter A-D, else the first standalone A-D,
# both case-insensitive; "?" (None here) when neither.
ECHOINK_TABLE = [
    ("<think>x</think><answer>C</answer>", "C"),
    ("<think>x</think><answer> b </answer>", "B"),                      # case and spaces
    ("<think>I think a dog barks</think><answer>D</answer>", "D"),     # the tag first, wherever it is
    ("<answer>A</answer> then <answer>B</answer>", "A"),               # the first tag
    ("<answer>C.</answer>", "C"),                                      # not a tag match; the bare C
    ("<think>Option B fits</think><answer>the dog</answer>", "B"),     # first standalone letter
    ("It is a dog.", "A"),                                             # the article reads as A, as theirs
    ("<answer>E</answer>", None),                                      # only A-D
    ("Dog barking", None),                                             # letters inside words are not
    ("", None),
]


@pytest.mark.parametrize("output, letter", ECHOINK_TABLE)
def test_echoink_letter_is_echoinks_extract_choice(output, letter):
    assert echoink_letter(output) == letter
    choices = ("a guitar", "a dog barking", "a car engine", "a violin")
    scored = _score(output, choices, "C", OFFICIAL_RULE["avqa-r1-6k"])
    assert scored.correct_official is (letter == "C") and scored.official_prediction == (letter or "")


def test_unscorable_item_has_no_exact_score_but_an_official_one():
    choices = ["American", "Colombian", "British", "Indian"]
    both = score_output("<think>t</think><answer>American Colombian</answer>", choices, None,
                        "American\nColombian", "token_set")
    assert both.correct is None and both.correct_official, "official string_match accepts both words"
    one = score_output("<think>t</think><answer>A</answer>", choices, None, "American\nColombian", "token_set")
    assert one.correct is None and not one.correct_official


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
    half = {"n": 2, "scorable": 2, "correct": 1, "accuracy": 0.5, "correct_official": 1, "accuracy_official": 0.5}
    assert av["per_category"] == {"c1": half, "c2": half}
    assert av["per_tag"]["audio type"]["music"] == half
    assert av["per_difficulty"]["hard"] == half
    assert av["per_difficulty"]["unknown"]["n"] == 1
    assert a["accuracy"] == 0.5 and a["parse_failures"] == 0
    assert report["difficulty"] == {"source": "t.jsonl", "matched": 3, "unmatched": 1,
                                    "counts": {"easy": 1, "hard": 2}}
    md = render_markdown(report)
    for needle in ("| av (audio + visual) | 4 | 50.0 |", "## Accuracy per category", "## Accuracy per difficulty",
                   "| hard | 50.0 (2) |", "greedy", "no answer found (1)"):
        assert needle in md, needle


def test_summary_exact_official_unscorable_disagreements_and_all_failed():
    def row(i, correct, official, error=None):
        return {"id": f"m{i}", "modality": "a", "correct": correct, "correct_official": official, "letter": "A",
                "category": "c", "tags": {}, "error": error, "parse_reason": "", "gold": "A" if correct is not None
                else None, "gold_text": "x", "prediction": "x"}

    rows = [row(0, True, True), row(1, False, True), row(2, True, False), row(3, None, True), row(4, None, False),
            row(5, False, False)]
    report = summarize(rows, {"benchmark": "mmar"})
    a = report["settings"]["a"]
    assert (a["n"], a["scorable"], a["correct"], a["accuracy"]) == (6, 4, 2, 0.5)
    assert (a["correct_official"], a["accuracy_official"]) == (3, 0.5)
    assert a["unscorable"] == 2 and a["unscorable_ids"] == ["m3", "m4"]
    assert [(d["id"], d["exact"], d["official"]) for d in a["disagreements"]] == [("m1", False, True),
                                                                                  ("m2", True, False)]
    assert not a["all_failed"]
    md = render_markdown(report)
    assert "## Unscorable items (a)" in md and "`m3`, `m4`" in md
    assert "## Exact vs official disagreements (a): 2" in md and "| `m1` |" in md
    assert "NOT A RESULT" not in md

    failed = summarize([row(0, False, False, error="frames: file not found"),
                        row(1, False, False, error="frames: file not found")], {"benchmark": "avqa"})
    assert failed["settings"]["a"]["all_failed"] and "NOT A RESULT" in render_markdown(failed)


# ---------------------------------------------------------------- published layouts

@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_layouts(tmp_path_factory.mktemp("published"))


def test_avqa_repository_layout_finds_data_video_from_the_annotation_folder(layouts):
    repo = layouts["avqa"]
    for data in (repo, repo / "data" / "annotation" / "val_qa.json"):
        items = load_benchmark("avqa", data)
        assert [i.id for i in items] == ["1000", "1001"] and [i.answer for i in items] == ["A", "B"]
        assert all(Path(i.video).parent == repo / "data" / "video" and Path(i.video).exists() for i in items)
        assert check_media_found("avqa", items) == []


def test_avqa_videos_elsewhere_stop_with_the_flag_to_give_and_media_root_fixes_it(layouts, tmp_path):
    annotation = tmp_path / "annotation" / "val_qa.json"  # the JSON copied away from its videos
    annotation.parent.mkdir()
    annotation.write_text((layouts["avqa"] / "data" / "annotation" / "val_qa.json").read_text())
    items = load_benchmark("avqa", annotation)
    with pytest.raises(BenchmarkFormatError, match="--media-root"):
        check_media_found("avqa", items)
    items = load_benchmark("avqa", annotation, layouts["avqa"] / "data" / "video")
    assert check_media_found("avqa", items) == [] and all(Path(i.video).exists() for i in items)


def test_avqa_folder_with_train_and_val_asks_for_one_file(layouts, tmp_path):
    folder = tmp_path / "data" / "annotation"
    folder.mkdir(parents=True)
    for name in ("train_qa.json", "val_qa.json"):
        (folder / name).write_text("[]")
    with pytest.raises(BenchmarkFormatError, match="several avqa files.*give one with --data"):
        resolve_data("avqa", tmp_path)


def test_omnibench_github_layout(layouts):
    items = load_benchmark("omnibench", layouts["omnibench"])
    assert [i.answer for i in items] == ["B", "D"] and [i.answer_text for i in items] == ["C major chord on a piano",
                                                                                       "Rain on a roof"]
    assert all(Path(i.image).exists() and Path(i.audio).exists() for i in items)
    assert items[0].audio.endswith("mm_data/audio/omni_0.mp3")


def test_omnibench_hub_parquet_parts_without_path_columns(layouts):
    parts = sorted((layouts["omnibench_hub"] / "data").glob("*.parquet"))
    for data in (layouts["omnibench_hub"], parts):
        items = load_benchmark("omnibench", data)
        assert [i.id for i in items] == ["10", "11"] and [i.answer for i in items] == ["B", "D"]
        assert [Path(i.audio).suffix for i in items] == [".wav", ".wav"]
        assert [Path(i.image).suffix for i in items] == [".png", ".png"]
        assert Path(items[1].audio).read_bytes()[:4] == b"RIFF"
    with pytest.raises(BenchmarkFormatError, match="give one --data file"):
        load_benchmark("mmar", [layouts["mmar_2025"] / "MMAR-meta.json", layouts["mmau"] / "mmau-test-mini.json"])


def test_dailyomni_layout(layouts):
    items = load_benchmark("dailyomni", layouts["dailyomni"])
    assert [i.id for i in items] == ["vid_a1#0", "vid_b2#0"] and items[0].choices[2] == "C major"
    assert all(Path(i.video).exists() for i in items)


def test_mmar_may_2025_rows_whose_answer_is_not_a_choice_are_unscorable_not_a_crash(layouts):
    items = load_benchmark("mmar", layouts["mmar_2025"])
    assert [i.id for i in items] == ["mmar-1", "mmar-2", "mmar-3"]
    assert [i.answer for i in items] == ["A", None, "B"]
    assert items[1].answer_text == "American\nColombian" and not items[1].scorable
    assert all(Path(i.audio).exists() for i in items)
    fixed = load_benchmark("mmar", layouts["mmar_2026"])
    assert [i.answer for i in fixed] == ["A", "A", "B"], "the Feb-2026 JSONL fixed the row"


def test_mmar_folder_with_both_releases_uses_the_newer_file(layouts, tmp_path):
    for name in ("MMAR-meta.json", "MMAR-meta.jsonl"):
        (tmp_path / name).write_text("")
    assert resolve_data("mmar", tmp_path) == [tmp_path / "MMAR-meta.jsonl"]


def test_mmau_layout(layouts):
    items = load_benchmark("mmau", layouts["mmau"])
    assert [i.answer for i in items] == ["A", "B"] and items[0].tags["difficulty"] == "easy"
    assert all(Path(i.audio).exists() for i in items)


def test_avqa_r1_6k_valid_split_as_published(tmp_path):
    from tests.published_layouts import OPTIONS, write_avqa_r1_6k

    folder = write_avqa_r1_6k(tmp_path, n=1, valid_n=3)
    for data in (folder, folder / "valid", folder / "valid" / "omni_rl_format_valid.json"):
        items = load_benchmark("avqa-r1-6k", data)
        assert [i.id for i in items] == ["7", "10", "13"] and [i.answer for i in items] == ["A", "B", "C"]
        assert items[0].choices == tuple(OPTIONS) and items[0].modality == "av" and items[0].video is None
        assert Path(items[0].image) == folder / "valid" / "images" / "sample_7.jpg" and Path(items[0].audio).exists()
        assert check_media_found("avqa-r1-6k", items) == []
    away = tmp_path / "away" / "omni_rl_format_valid.json"
    away.parent.mkdir()
    shutil.copy(folder / "valid" / "omni_rl_format_valid.json", away)
    with pytest.raises(BenchmarkFormatError, match="--media-root DIR: the split folder holding images/ and audios/"):
        check_media_found("avqa-r1-6k", load_benchmark("avqa-r1-6k", away))
    assert check_media_found("avqa-r1-6k", load_benchmark("avqa-r1-6k", away, folder / "valid")) == []


def test_a_folder_without_the_published_file_names_the_flag(tmp_path):
    with pytest.raises(BenchmarkFormatError, match="no dailyomni annotation file found.*--data"):
        resolve_data("dailyomni", tmp_path)
    with pytest.raises(BenchmarkFormatError, match="no such file"):
        resolve_data("mmau", tmp_path / "missing.json")
