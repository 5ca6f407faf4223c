"""The demo's teachers and merger: their targets are what the pipeline reads, and training is cached."""

import json
import re

import pytest

from demo import models as dm
from demo.task import consistent_letters, make_items
from filters.answers import parse_answer
from merger.validate import validate_merged


def _words(text):
    return set(re.findall(r"[a-z]+", text))


def _rows(n=40, seed=5):
    return [item.manifest_row(f"videos/{item.id}.mp4") for item in make_items(n, seed)]


def test_teacher_targets_name_their_modality_and_split_evenly_between_its_two_options():
    for item, row in zip(make_items(40, 5), _rows()):
        for role, own, other in (("vision", item.colour, item.pitch), ("audio", item.pitch, item.colour)):
            targets = dm.teacher_targets(row, role)
            assert len(targets) == 2
            letters = [parse_answer(t, row["choices"]).letter for t in targets]
            expected = consistent_letters(colour=item.colour) if role == "vision" else consistent_letters(pitch=item.pitch)
            assert sorted(letters) == expected, "one target per consistent option"
            assert item.answer in letters, "a teacher that knows its modality is right on one of the two"
            for target in targets:
                assert target.startswith("Visual Description:" if role == "vision" else "Audio Description:")
                assert own in _words(target) and other not in _words(target)


def test_merger_target_passes_validation_and_prompt_carries_both_right_analyses():
    for row in _rows(12):
        assert validate_merged(dm.merger_target(row), row["answer"]).ok
        prompt = dm.merger_prompt(row)
        for role in ("vision", "audio"):
            right = next(t for t in dm.teacher_targets(row, role) if t.endswith(f"({row['answer']})"))
            assert right in prompt


def test_cache_key_follows_settings_and_rows():
    rows = _rows(4)
    base = dm.settings_key(dm.DemoModelSettings(), rows)
    assert base == dm.settings_key(dm.DemoModelSettings(), rows)
    assert base != dm.settings_key(dm.DemoModelSettings(seed=1), rows)
    assert base != dm.settings_key(dm.DemoModelSettings(), rows[:3])


@pytest.mark.slow
def test_train_models_writes_loadable_models_and_reuses_them(tmp_path, capsys):
    from transformers import AutoTokenizer

    from demo.task import write_task

    manifest = write_task(tmp_path / "av", n=4, seed=0, seconds=1.0, test_fraction=0.0)["train"]
    settings = dm.DemoModelSettings(vision_steps=2, audio_steps=2, merger_steps=2)
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


def test_demo_summary_counts_merger_attempts_and_right_descriptions():
    from demo.summary import accuracies, description_hits, merger_tally

    row = _rows(1)[0]
    colour, pitch = dm.clip_properties(row)
    kept = {**row, "status": "kept", "stage": "kept", "merger_attempts": 2,
            "vision_raw": dm.teacher_targets(row, "vision")[0], "audio_raw": "Audio Description: The tone is"}
    dropped = {**row, "status": "rejected", "stage": "merger", "vision_raw": None}
    filtered = {**row, "status": "rejected", "stage": "filter", "vision_raw": f"The screen is {colour}."}
    rows = [kept, dropped, filtered]
    assert merger_tally(rows, attempts_per_sample=3) == {"samples": 2, "attempts": 5, "validation_failures": 4,
                                                          "samples_dropped": 1}
    assert description_hits(rows, "vision") == (2, 2)
    assert description_hits(rows, "audio") == (0, 1)
    assert accuracies({"settings": {"av": {"accuracy": 0.9}}}) == {"av": 0.9, "a": None, "v": None}


@pytest.mark.parametrize("after, learned", [
    ({"av": 1.0, "a": 0.0, "v": 0.5}, True),
    ({"av": 0.75, "a": None, "v": 0.25}, True),  # an ablation not run counts as 0
    ({"av": 0.5, "a": 0.0, "v": 0.5}, False),  # colour only: the pitch is a coin flip
    ({"av": 0.7, "a": 0.7, "v": 0.0}, False),  # no better with both than with the audio alone
    ({"av": None, "a": 0.0, "v": 0.0}, False),
])
def test_learned_both_needs_av_above_the_threshold_and_both_ablations(after, learned):
    from demo.summary import learned_both

    assert learned_both(after) is learned


def test_demo_summary_says_whether_the_student_uses_both_modalities():
    from demo.summary import render

    result = {"teachers": {}, "filter": "both", "kept": 1, "samples_in": 4, "kept_answers": {"A": 1},
              "merger": {"attempts": 1, "samples": 1, "validation_failures": 0, "samples_dropped": 0},
              "student": {"before": {"av": 0.0, "a": 0.0, "v": 0.0}, "after": {"av": 0.5, "a": 0.0, "v": 0.5}}}
    assert render(result).splitlines()[-1].startswith("the trained student does not use both modalities")
    result["student"]["after"]["av"] = 1.0
    assert render(result).splitlines()[-1].startswith("the trained student uses both modalities")
