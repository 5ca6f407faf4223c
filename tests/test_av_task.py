"""The demo's AV task needs both modalities: each one alone leaves exactly two options."""

from media.av_task import COLOURS, PITCHES, consistent_letters, make_items


def test_each_modality_alone_leaves_two_options_and_both_leave_the_answer():
    items = make_items(200, seed=3)
    for item in items:
        assert len(set(item.choices)) == 4
        vision = consistent_letters(item, colour=item.colour)
        audio = consistent_letters(item, pitch=item.pitch)
        assert len(vision) == 2 and len(audio) == 2
        assert set(vision) & set(audio) == {item.answer}
        assert consistent_letters(item, colour=item.colour, pitch=item.pitch) == [item.answer]


def test_deterministic_from_seed_with_both_splits_and_spread_answers():
    a, b = make_items(100, seed=7), make_items(100, seed=7)
    assert a == b and a != make_items(100, seed=8)
    assert {i.split for i in a} == {"train", "test"}
    assert {i.answer for i in a} == set("ABCD")
    assert {i.colour for i in a} <= set(COLOURS) and {i.pitch for i in a} <= set(PITCHES)


def test_manifest_row_shape():
    row = make_items(1)[0].manifest_row("videos/av00000.mp4")
    assert set(row) == {"id", "video", "question", "choices", "answer", "question_type"}
    assert row["choices"][ord(row["answer"]) - 65].startswith("a ")


def test_write_av_dataset_renders_clips_and_splits(tmp_path):
    import json

    from media.synthetic import write_av_dataset

    paths = write_av_dataset(tmp_path, n=6, seed=1, seconds=1.0, test_fraction=0.5)
    rows = {s: [json.loads(l) for l in p.read_text().splitlines()] for s, p in paths.items()}
    assert sum(len(r) for r in rows.values()) == 6
    for split_rows in rows.values():
        for row in split_rows:
            assert (tmp_path / row["video"]).stat().st_size > 0
