"""Manifest checking: every invalid row reported at once, with its line, id and the real value."""

from __future__ import annotations

import json

import pytest

from corpus.manifest import ManifestError, load_manifest, read_manifest

GOOD = {"id": "ok", "video": "v.mp4", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "B"}

# One row per kind of problem, with a fragment the message must contain (line numbers are 1-based,
# the good row is line 1; the blank line 3 is skipped but counted).
BAD_LINES = [
    ('{"id": "j1", "video": "v.mp4", "question": "Q", ', "line 2: invalid JSON"),
    ("", None),
    (json.dumps([1, 2]), "line 4: expected a JSON object, got [1, 2]"),
    (json.dumps({**GOOD, "id": "c1", "choices": "ABCD"}), "line 5 (id 'c1'): 'choices' must be a list of option texts, got the string 'ABCD'"),
    (json.dumps({**GOOD, "id": "a7", "answer": 7}), "line 6 (id 'a7'): answer index 7 is not one of the options (0 to 3 for 4 choices)"),
    (json.dumps({**GOOD, "id": "aE", "answer": "E"}), "line 7 (id 'aE'): answer 'E' is not one of the options (A to D)"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "question"} | {"id": "nq"}), "line 8 (id 'nq'): missing field 'question'"),
    (json.dumps(GOOD), "line 9 (id 'ok'): duplicate id 'ok' (first at line 1)"),
    (json.dumps({**GOOD, "id": "nv", "video": None}), "line 10 (id 'nv'): needs 'video' or both 'image' and 'audio'"),
    (json.dumps({**GOOD, "id": "ab", "answer": True}), "line 11 (id 'ab'): answer must be a letter or a 0-based index, got true"),
    (json.dumps({**GOOD, "id": "ch", "choices": ["a", {"x": 1}]}), "line 12 (id 'ch'): 'choices' holds 1 empty or non-text"),
    (json.dumps({**GOOD, "id": "one", "choices": ["a"], "answer": 0}), "needs 2 to 26 choices, got 1"),
    (json.dumps({**GOOD, "id": "vq", "video": 5.5, "question": " "}), "line 14 (id 'vq'): empty 'question'"),
]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_invalid_row_is_listed_in_one_message(tmp_path):
    path = _write(tmp_path / "m.jsonl", [json.dumps(GOOD)] + [line for line, _ in BAD_LINES])
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = str(caught.value)
    expected = [fragment for _, fragment in BAD_LINES if fragment]
    assert f"{len(expected)} of {len(expected) + 1} rows are invalid" in message
    for fragment in expected:
        assert fragment in message, fragment
    reading = read_manifest(path)
    assert [s.id for s in reading.samples] == ["ok"]
    assert len(reading.invalid) == len(expected)


def test_skip_invalid_keeps_the_valid_rows_and_makes_unique_rejected_rows(tmp_path):
    path = _write(tmp_path / "m.jsonl", [json.dumps(GOOD)] + [line for line, _ in BAD_LINES])
    samples = load_manifest(path, skip_invalid=True)
    assert [(s.id, s.answer) for s in samples] == [("ok", "B")]
    rejected = [row.rejected_row() for row in read_manifest(path).invalid]
    assert len({r["id"] for r in rejected}) == len(rejected)  # the duplicate "ok" gets its own id
    assert all(r["stage"] == "manifest" and r["status"] == "rejected" and r["reason"] for r in rejected)
    assert "ok@line9" in {r["id"] for r in rejected}


def test_limit_checks_only_the_rows_it_takes(tmp_path):
    path = _write(tmp_path / "m.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, "id": "bad", "answer": 9})])
    assert [s.id for s in load_manifest(path, limit=1)] == ["ok"]
    with pytest.raises(ManifestError, match="1 of 2 rows are invalid"):
        load_manifest(path)


@pytest.mark.parametrize("content, message", [
    ("", "has no rows"),
    ("\n\n", "has no rows"),
])
def test_empty_manifest_is_refused(tmp_path, content, message):
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path, skip_invalid=True)


def test_all_rows_invalid_is_refused_even_when_skipping(tmp_path):
    path = _write(tmp_path / "m.jsonl", ["[1]", "{}"])
    with pytest.raises(ManifestError, match="none of its 2 rows is a valid sample"):
        load_manifest(path, skip_invalid=True)


def test_avqa_entries_are_checked_the_same_way(tmp_path):
    good = {"id": 1, "video_name": "abc_000010", "question_text": "What?", "multi_choice": ["a", "b", "c", "d"],
            "answer": 2}
    path = tmp_path / "train_qa.json"
    path.write_text(json.dumps([good, {**good, "id": 2, "answer": 7}, {**good, "id": 3, "multi_choice": "abcd"}, 5,
                                {**good, "id": 4, "answer": "C"}, {**good, "id": 5, "answer": "3"}]))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = str(caught.value)
    assert "4 of 6 rows are invalid" in message
    assert "entry 1 (id '2'): answer index 7 is not one of the options" in message
    assert "entry 2 (id '3'): 'multi_choice' must be a list of option texts, got the string 'abcd'" in message
    assert "entry 3: expected an AVQA annotation object, got 5" in message
    assert "entry 4 (id '4'): AVQA 'answer' must be a 0-based index, got 'C'" in message
    samples = load_manifest(path, skip_invalid=True)
    assert [(s.id, s.answer) for s in samples] == [("1", "C"), ("5", "D")]


def test_not_a_list_and_broken_json_files(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"video_name": 1}')
    with pytest.raises(ManifestError, match="expected a JSON list of AVQA annotations, got dict"):
        load_manifest(path)
    path.write_text("[{]")
    with pytest.raises(ManifestError, match="invalid JSON.*line 1 column 3"):
        load_manifest(path)
