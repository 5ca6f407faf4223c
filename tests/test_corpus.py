"""The corpus room: rows stored and read back in one layout, the dataset card from its template."""

from __future__ import annotations

import yaml

from corpus.card import dataset_card
from corpus.schema import INTERNAL_COLUMNS, STAGES
from corpus.stats import compute_stats, funnel
from corpus.store import assemble, kept_ids, read_frame, read_rows


def _row(i: int, status: str, split: str = "train", **extra) -> dict:
    base = {"id": f"s{i}", "split": split, "question": f"Q{i}", "choices": ["a", "b", "c", "d"], "answer": "B",
            "question_type": "Which", "source": f"v{i}.mp4", "status": status,
            "stage": "kept" if status == "kept" else "filter", "reason": "" if status == "kept" else "audio teacher wrong",
            "vision_answer": "B", "vision_raw": "B", "vision_parse": "after 'Answer:'",
            "audio_answer": "B" if status == "kept" else "C", "audio_raw": "x", "audio_parse": "after 'Answer:'"}
    if status == "kept":
        base.update(merged="<think>red and loud</think><answer>B</answer>", frames=["f.jpg"], audio="a.wav",
                    duration=3.0, merger_kind="llm")
    return {**base, **extra}


def test_rows_round_trip_and_bookkeeping_stays_out_of_the_corpus(tmp_path):
    rows = [_row(0, "kept"), _row(1, "rejected"), _row(2, "kept", split="test"), _row(0, "kept", question="again")]
    assert len(assemble(tmp_path, rows)) == 3  # one row per id, the last wins
    corpus = read_frame(tmp_path)
    assert sorted(corpus["id"]) == ["s0", "s2"] and not set(INTERNAL_COLUMNS) & set(corpus.columns)
    assert corpus.set_index("id").loc["s0", "question"] == "again"
    back = {r["id"]: r for r in read_rows(tmp_path)}
    assert back["s1"]["status"] == "rejected" and back["s1"]["reason"] == "audio teacher wrong"
    assert back["s0"]["status"] == "kept" and back["s0"]["stage"] == "kept"
    assert kept_ids(tmp_path) == {"s0", "s2"}
    assemble(tmp_path, rows[:2])  # the test split no longer has rows: its file goes
    assert not (tmp_path / "corpus" / "test.parquet").exists() and kept_ids(tmp_path) == {"s0"}


def test_funnel_follows_the_pipeline_stages():
    rows = [_row(0, "kept"), _row(1, "rejected"), _row(2, "rejected", stage="media", reason="no audio track")]
    assert list(funnel(rows)) == ["input", *(f"after_{s}" for s in STAGES)]
    assert funnel(rows)["after_media"] == 2 and funnel(rows)["after_filter"] == 1


def test_card_is_the_template_filled_in():
    rows = [_row(0, "kept"), _row(1, "rejected")]
    stats = compute_stats(rows)
    models = [{"role": r, "model": f"m-{r}", "prompt": f"{r}_prompt", "prompt_sha256": "0123456789abcdef",
               "sampling": '{"temperature": 0.7}'} for r in ("vision", "audio", "merger")]
    recipe = {"filter": "both", "merger_kind": "llm", "num_frames": 8, "audio_seconds": 10.0, "sample_rate": 16000}
    card = dataset_card(stats, ["test", "train"], models, recipe)
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"][0]["data_files"] == [{"split": "test", "path": "corpus/test.parquet"},
                                                 {"split": "train", "path": "corpus/train.parquet"}]
    assert "| audio | `m-audio` | `audio_prompt` (sha256 0123456789ab) | `{\"temperature\": 0.7}` |" in card
    assert "2 samples in, 1 kept." in card and "| after_filter | 1 |" in card
    assert "| filter | audio teacher wrong | 1 |" in card
    assert "8 frames at segment\ncentres, 10 s of 16000 Hz" in card
    empty = dataset_card(compute_stats([_row(0, "kept")]), ["train"], models, recipe)
    assert "| – | – | 0 |" in empty  # nothing dropped
