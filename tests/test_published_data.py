"""Training data read as published (``corpus.published``): each layout's rows become samples with the
right gold letter and media, each bad row is listed with its reason, and the layout is told from the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from configs import UserError
from corpus.manifest import ManifestError, read_manifest
from corpus.published import dataset_kind, load_dataset, read_dataset
from tests.published_layouts import (
    ARC_GOLD,
    BAD,
    OPTIONS,
    write_arc_easy,
    write_avqa_annotation,
    write_avqa_r1_6k,
    write_r1_aqa,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    return {"avqa-r1-6k": write_avqa_r1_6k(root / "good"), "r1-aqa": write_r1_aqa(root / "good"),
            "arc-easy": write_arc_easy(root / "good"), "avqa": write_avqa_annotation(root / "good"),
            "bad avqa-r1-6k": write_avqa_r1_6k(root / "bad", bad=True), "bad r1-aqa": write_r1_aqa(root / "bad", bad=True),
            "bad arc-easy": write_arc_easy(root / "bad", bad=True), "bad avqa": write_avqa_annotation(root / "bad", bad=True)}


def test_the_layout_is_told_from_the_path(published, synthetic_data, tmp_path):
    r1_6k = published["avqa-r1-6k"]
    for path in (r1_6k, r1_6k / "train", r1_6k / "valid", r1_6k / "train" / "omni_rl_format_train.json"):
        assert dataset_kind(path) == "avqa-r1-6k", path
    renamed = tmp_path / "avqa_r1_train.json"  # a renamed file is told by its rows
    shutil.copy(r1_6k / "train" / "omni_rl_format_train.json", renamed)
    assert dataset_kind(renamed) == "avqa-r1-6k"
    arc = published["arc-easy"]
    for path in (arc, arc.parent, arc / "test-00000-of-00001.parquet"):
        assert dataset_kind(path) == "arc-easy", path
    assert dataset_kind(published["r1-aqa"]) == "r1-aqa"
    assert dataset_kind(published["avqa"]) == "avqa"
    assert dataset_kind(synthetic_data / "manifest.jsonl") == "manifest"
    assert dataset_kind(synthetic_data / "avqa.json") == "avqa"
    with pytest.raises(ManifestError, match="not a dataset folder"):
        dataset_kind(tmp_path)
    with pytest.raises(ManifestError, match="dataset not found"):
        dataset_kind(tmp_path / "nope.jsonl")
    assert issubclass(ManifestError, UserError)


def test_avqa_r1_6k_rows_are_image_and_audio_samples_with_plain_options(published):
    folder = published["avqa-r1-6k"]
    reading = read_dataset(folder / "train")
    assert reading.invalid == [] and [s.id for s in reading.samples] == ["10", "13", "16"]
    first = reading.samples[0]
    assert first.choices == OPTIONS and [s.answer for s in reading.samples] == ["A", "B", "C"]
    assert first.image == str(folder / "train" / "images" / "sample_10.jpg") and Path(first.image).is_file()
    assert first.audio == str(folder / "train" / "audios" / "sample_10.wav") and Path(first.audio).is_file()
    assert first.video is None and first.split == "train"
    assert first.extra["problem_id"] == 10 and first.extra["data_source"] == "OmniInstruct_v1-AVQA"
    # the AVQA_R1 folder: split picks (valid, validation), default train; the file itself; the split's own name wins
    assert [s.id for s in read_dataset(folder).samples] == ["10", "13", "16"]
    valid = read_dataset(folder, split="validation").samples
    assert [s.id for s in valid] == ["7", "10"] and {s.split for s in valid} == {"valid"}
    assert [s.id for s in read_dataset(folder / "valid" / "omni_rl_format_valid.json").samples] == ["7", "10"]
    assert len(read_dataset(folder / "train", limit=2).samples) == 2
    with pytest.raises(ManifestError, match="no AVQA-R1-6K split 'test'.*splits here: train, valid"):
        read_dataset(folder, split="test")
    with pytest.raises(ManifestError, match="this is the train split, not 'valid'"):
        read_dataset(folder / "train" / "omni_rl_format_train.json", split="valid")
    elsewhere = read_dataset(folder / "train", video_dir="/media/r1").samples[0]
    assert elsewhere.audio == "/media/r1/audios/sample_10.wav"


def test_r1_aqa_rows_are_audio_only_samples(published):
    path = published["r1-aqa"]
    reading = read_dataset(path)
    assert reading.invalid == [] and [s.id for s in reading.samples] == ["200", "201", "202"]
    assert [s.answer for s in reading.samples] == ["A", "B", "C"] and reading.samples[0].choices == OPTIONS
    assert all(s.video is None and s.image is None and Path(s.audio).is_file() for s in reading.samples)
    assert reading.samples[1].audio == str(path.parent / "wavs" / "clip001_000030.wav"), "relative to the file"
    assert reading.samples[0].question_type == "Which" and reading.samples[0].extra["dataset_name"] == "AVQA"
    assert read_dataset(path, video_dir="/data").samples[1].audio == "/data/wavs/clip001_000030.wav"


def test_arc_easy_rows_are_text_only_with_letters_by_position(published):
    folder = published["arc-easy"]
    samples = read_dataset(folder).samples
    assert {s.id: s.answer for s in samples} == ARC_GOLD, "digit labels 1-4 become A-D"
    assert [len(s.choices) for s in samples] == [4, 4, 3, 5]
    assert all(s.video is None and s.image is None and s.audio is None for s in samples)
    assert samples[1].choices[3] == "an iron nail" and samples[1].extra["labels"] == ["1", "2", "3", "4"]
    assert [s.id for s in read_dataset(folder, split="valid").samples] == ["Mercury_7175875", "NYSEDREGENTS_2015_4_8"]
    assert {s.split for s in read_dataset(folder.parent, split="test").samples} == {"test"}
    assert len(read_dataset(folder / "train-00000-of-00001.parquet").samples) == 4


def test_manifest_and_avqa_read_as_before(published, synthetic_data):
    for path, video_dir in ((synthetic_data / "manifest.jsonl", None), (synthetic_data / "avqa.json",
                                                                         synthetic_data / "videos")):
        assert read_dataset(path, video_dir) == read_manifest(path, video_dir)
    samples = read_dataset(published["avqa"]).samples
    assert [s.answer for s in samples] == ["A", "B"] and all(Path(s.video).is_file() for s in samples)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_bad_row_is_listed_with_its_reason(published, kind):
    reading = read_dataset(published[f"bad {kind}"])
    assert {row.where: row.reason for row in reading.invalid}.keys() == BAD[kind].keys()
    for row in reading.invalid:
        assert BAD[kind][row.where] in row.reason, (row.where, row.reason)
    with pytest.raises(ManifestError) as refused:
        load_dataset(published[f"bad {kind}"])
    message = str(refused.value)
    assert f"{len(BAD[kind])} of {len(reading.samples) + len(BAD[kind])} rows are invalid" in message
    assert all(f"  {where}" in message for where in BAD[kind])
    kept = load_dataset(published[f"bad {kind}"], skip_invalid=True)
    assert kept.samples == reading.samples and len(kept.invalid) == len(BAD[kind])


def test_whole_file_problems_and_a_dataset_with_no_valid_row(tmp_path):
    (tmp_path / "omni_rl_format_train.json").write_text("{}")
    with pytest.raises(ManifestError, match="expected a JSON list of AVQA-R1-6K rows"):
        read_dataset(tmp_path / "omni_rl_format_train.json")
    (tmp_path / "omni_rl_format_train.json").write_text("[]")
    with pytest.raises(ManifestError, match="has no rows"):
        read_dataset(tmp_path)
    (tmp_path / "omni_rl_format_train.json").write_text(json.dumps([{"problem_id": 1}]))
    with pytest.raises(ManifestError, match="none of its 1 rows is a valid sample"):
        load_dataset(tmp_path, skip_invalid=True)
    (tmp_path / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="cannot read the parquet file"):
        read_dataset(tmp_path / "train-00000-of-00001.parquet")
