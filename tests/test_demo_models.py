"""The demo's teachers and merger: their targets are what the pipeline reads, and training is cached."""

import json
import re

import pytest

from filters.answers import parse_answer
from media.av_task import consistent_letters, make_items
from merger.validate import validate_merged
from training import demo_models as dm


def _words(text):
    return set(re.findall(r"[a-z]+", text))


def _rows(n=40, seed=5):
    return [item.manifest_row(f"videos/{item.id}.mp4") for item in make_items(n, seed)]


def test_teacher_targets_name_their_modality_and_parse_to_a_consistent_option():
    right = {"vision": 0, "audio": 0}
    for item, row in zip(make_items(40, 5), _rows()):
        vision, audio = dm.vision_target(row), dm.audio_target(row)
        assert vision.startswith("Visual Description:") and item.colour in _words(vision)
        assert item.pitch not in _words(vision)
        assert audio.startswith("Audio Description:") and item.pitch in _words(audio)
        assert item.colour not in _words(audio)
        v, a = parse_answer(vision, row["choices"]), parse_answer(audio, row["choices"])
        assert v.letter in consistent_letters(item, colour=item.colour)
        assert a.letter in consistent_letters(item, pitch=item.pitch)
        right["vision"] += v.letter == item.answer
        right["audio"] += a.letter == item.answer
    # each modality alone narrows to two options: a perfect teacher is right sometimes, not always
    assert all(0 < count < 40 for count in right.values())


def test_merger_target_passes_validation_and_prompt_carries_both_analyses():
    for row in _rows(12):
        assert validate_merged(dm.merger_target(row), row["answer"]).ok
        prompt = dm.merger_prompt(row, dm.audio_target(row), dm.vision_target(row))
        assert dm.audio_target(row) in prompt and dm.vision_target(row) in prompt


def test_variants_reask_the_same_clip_with_other_options():
    rows = _rows(6)
    asked = dm.variants(rows, 5, seed=1)
    assert len(asked) == 30 and asked[0] == rows[0]
    assert asked == dm.variants(rows, 5, seed=1)
    for row in asked:
        original = next(r for r in rows if r["video"] == row["video"])
        assert dm.clip_properties(row) == dm.clip_properties(original)
        assert len(set(row["choices"])) == 4
    assert len({tuple(r["choices"]) for r in asked}) > len(rows)


def test_cache_key_follows_settings_and_rows():
    rows = _rows(4)
    base = dm.settings_key(dm.DemoModelSettings(), rows)
    assert base == dm.settings_key(dm.DemoModelSettings(), rows)
    assert base != dm.settings_key(dm.DemoModelSettings(seed=1), rows)
    assert base != dm.settings_key(dm.DemoModelSettings(), rows[:3])


@pytest.mark.slow
def test_train_models_writes_loadable_models_and_reuses_them(tmp_path, capsys):
    from transformers import AutoTokenizer

    from media.synthetic import write_av_dataset

    manifest = write_av_dataset(tmp_path / "av", n=4, seed=0, seconds=1.0, test_fraction=0.0)["train"]
    settings = dm.DemoModelSettings(teacher_steps=2, merger_steps=2, variants=2)
    folder = dm.train_models(manifest, tmp_path / "models", settings)
    report = json.loads((folder / "done.json").read_text())
    assert report["rows"] == 4 and {"vision_loss", "audio_loss", "merger_loss"} <= set(report)
    for role in dm.ROLES:
        assert (folder / role / "config.json").exists()
    assert AutoTokenizer.from_pretrained(folder / "merger").eos_token == "<|im_end|>"
    stamp = (folder / "done.json").stat().st_mtime_ns
    assert dm.train_models(manifest, tmp_path / "models", settings) == folder
    assert (folder / "done.json").stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().out
