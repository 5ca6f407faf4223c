"""The demo's AV task needs both modalities: each one alone leaves exactly two options."""

import json

from demo.task import COLOURS, LETTERS, OPTIONS, PITCHES, consistent_letters, make_items, properties


def test_fixed_options_each_modality_alone_leaves_two_and_both_leave_the_answer():
    items = make_items(200, seed=3)
    for item in items:
        assert item.choices == OPTIONS and len(set(OPTIONS)) == 4
        vision = consistent_letters(item.choices, colour=item.colour)
        audio = consistent_letters(item.choices, pitch=item.pitch)
        assert len(vision) == 2 and len(audio) == 2
        assert set(vision) & set(audio) == {item.answer}
        assert consistent_letters(item.choices, colour=item.colour, pitch=item.pitch) == [item.answer]
        assert properties(item.choices, item.answer) == (item.colour, item.pitch)
    # one option matches only the picture, one only the sound, one neither
    for item in items[:4]:
        only_picture = set(consistent_letters(colour=item.colour)) - {item.answer}
        only_sound = set(consistent_letters(pitch=item.pitch)) - {item.answer}
        assert len(only_picture) == len(only_sound) == 1
        assert len(set(LETTERS) - only_picture - only_sound - {item.answer}) == 1


def test_deterministic_from_seed_and_both_splits_hold_every_answer_equally():
    a, b = make_items(96, seed=7), make_items(96, seed=7)
    assert a == b and a != make_items(96, seed=8)
    assert {i.colour for i in a} == set(COLOURS) and {i.pitch for i in a} == set(PITCHES)
    for split in ("train", "test"):
        answers = [i.answer for i in a if i.split == split]
        assert answers and all(answers.count(letter) == len(answers) // 4 for letter in LETTERS)
    assert len({i.detune for i in a}) > 1 and len({i.box_offset for i in a}) > 1
    assert len(make_items(6, seed=1)) == 6


def test_manifest_row_shape():
    row = make_items(1)[0].manifest_row("videos/av00000.mp4")
    assert set(row) == {"id", "video", "question", "choices", "answer", "question_type"}
    assert row["choices"] == list(OPTIONS)


def test_write_task_renders_the_colour_and_the_pitch_of_each_split(tmp_path):
    import numpy as np

    from demo.task import write_task
    from media import SAMPLE_RATE, load_clip

    paths = write_task(tmp_path, n=6, seed=1, seconds=1.0, test_fraction=0.5)
    rows = {s: [json.loads(line) for line in p.read_text().splitlines()] for s, p in paths.items()}
    assert sum(len(r) for r in rows.values()) == 6
    for split_rows in rows.values():
        for row in split_rows:
            clip = load_clip(tmp_path / row["video"])
            assert clip.error() is None and clip.frames is not None and clip.audio is not None
            colour, pitch = properties(row["choices"], row["answer"])
            red, _, blue = np.mean(clip.frames, axis=(0, 1, 2))
            assert (red > blue) == (colour == "red")
            spectrum = np.abs(np.fft.rfft(clip.audio))
            peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(clip.audio)
            assert (peak_hz > 1000) == (pitch == "high") and 150 < peak_hz < 2000
