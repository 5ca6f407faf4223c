"""The recipes of ``configs/recipes/`` (EchoInk-R1, Omni-R1 and its text-only variants) run by their documented
command on data in its published layout; each student prompt is its recipe's template verbatim; ``--dry-run``
shows the prompt training then uses; the config machinery recipes rely on (``base:``, the old ``corpus`` key)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from configs import UserError
from tests import published_layouts
from training.train_config import SAVED_CONFIG, load_config

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
# Overrides for size only: 2 GRPO steps of 2 completions of 8 tokens, on CPU.
SIZE = ["grpo.max_steps=2", "grpo.num_generations=2", "grpo.per_device_train_batch_size=2",
        "grpo.gradient_accumulation_steps=1", "grpo.max_completion_length=8", "grpo.logging_steps=1",
        "precision=fp32", "activation_checkpointing=false"]
ECHOINK_INSTRUCTION = (
    "Please think about this question as if you were a human pondering deeply. Make sure to carefully consider both "
    "the visual and audio information before answering. Engage in an internal dialogue using expressions such as "
    "'let me think', 'wait', 'Hmm', 'oh, I see', 'let's break it down', etc, or other natural language thought "
    "expressions It's encouraged to include self-reflection or verification in the reasoning process. Provide your "
    "detailed reasoning between the <think> </think> tags, and then give your final answer between the <answer> "
    "</answer> tags. Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> "
    "</answer> tags.")
# recipe -> (writer of its published data, the values its YAML must resolve to)
CASES = {
    "echoink-r1": (published_layouts.write_avqa_r1_6k, {
        "prompt": "echoink_r1", "freeze_encoders": False, "stages": ["grpo"], "data.image_max_pixels": 200704,
        "grpo.num_generations": 16, "grpo.beta": 0.001, "grpo.temperature": 1.0, "grpo.top_p": 0.95,
        "grpo.learning_rate": 1e-6, "grpo.max_grad_norm": 5.0, "grpo.max_completion_length": 768,
        "grpo.rewards": {"echoink_accuracy": 1.0, "echoink_format": 1.0}}),
    "omni-r1": (published_layouts.write_r1_aqa, {
        "prompt": "omni_r1", "freeze_encoders": False, "data.vision": False, "data.audio": True,
        "grpo.num_generations": 4, "grpo.beta": 0.04, "grpo.temperature": 1.2, "grpo.max_steps": 1000,
        "grpo.rewards": {"accuracy": 1.0}}),
    "omni-r1-text-only": (published_layouts.write_avqa_annotation, {
        "prompt": "omni_r1", "data.vision": False, "data.audio": False, "grpo.temperature": 1.2,
        "grpo.rewards": {"accuracy": 1.0}}),
    "omni-r1-arc-easy": (published_layouts.write_arc_easy, {
        "prompt": "omni_r1", "data.vision": False, "data.audio": False, "grpo.beta": 0.04,
        "grpo.rewards": {"accuracy": 1.0}}),
}


def _value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def _train(recipe: str, data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(RECIPES / f"{recipe}.yaml"), "--model", str(model), "--data", str(data),
            "--output-dir", str(out), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(CASES))
def test_each_recipe_trains_from_its_published_data_as_its_dry_run_shows(recipe, tiny_models, tmp_path, capsys,
                                                                         monkeypatch):
    from training.dry_run import render_prompt
    from training.grpo import AVGRPOTrainer
    from training.runtime import load_processor
    from training.sft_then_grpo import main

    write, expected = CASES[recipe]
    data = write(tmp_path / "data")
    argv = _train(recipe, data, tiny_models["omni"], tmp_path / "run", *SIZE)
    main([*argv, "--dry-run"])
    shown = capsys.readouterr().out
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"
    first_id = shown.split("# first prompt (row ")[1].split(";")[0].strip("'")
    dry_prompt = shown[shown.index("# first prompt"):].split("\n", 1)[1][:-1]  # print's own newline dropped

    prompts: dict[str, tuple[int, ...]] = {}
    prepare = AVGRPOTrainer._prepare_media

    def recording(self, inputs):
        rows = prepare(self, inputs)
        prompts.update((str(i["id"]), r["prompt_ids"]) for i, r in zip(inputs, rows))
        return rows

    monkeypatch.setattr(AVGRPOTrainer, "_prepare_media", recording)
    main([*argv, "data.max_samples=2"])
    resolved = yaml.safe_load((tmp_path / "run" / "grpo" / "config.yaml").read_text())
    recipe_values = load_config(RECIPES / f"{recipe}.yaml").model_dump(mode="json")
    sized = {item.split("=")[0] for item in SIZE}
    for key, value in expected.items():
        assert _value(recipe_values, key) == value, key
        if key not in sized:
            assert _value(resolved, key) == value, key
    assert (tmp_path / "run" / "grpo" / "final").is_dir() and not (tmp_path / "run" / "sft").exists()
    saved = load_config(tmp_path / "run" / "grpo" / "final" / SAVED_CONFIG)  # evaluation asks the student as trained
    assert saved.prompt == expected["prompt"] and saved.grpo.rewards == expected["grpo.rewards"]
    metrics = (tmp_path / "run" / "grpo" / "metrics.jsonl").read_text()
    assert all(f"rewards/{name}_reward/mean" in metrics for name in expected["grpo.rewards"])
    assert first_id in prompts, "training saw the dry run's first row"
    assert render_prompt(load_processor(tiny_models["omni"]), prompts[first_id]) == dry_prompt


def _first_prompt(recipe: str, data: Path, model: Path):
    from student.inputs import encode_prompt
    from training.data import load_rows, media_loader
    from training.runtime import load_processor

    config = load_config(RECIPES / f"{recipe}.yaml", [f"model={model}", f"data.path={data}"])
    row = load_rows(config.data).frame.iloc[0].to_dict()
    sample = media_loader(config)(row)
    processor = load_processor(model)
    ids = encode_prompt(processor, sample, config.system_prompt, config.av_layout)["input_ids"].tolist()
    return sample, row, processor, ids


def _user_text(processor, ids: list[int]) -> str:
    """The user turn's text as the tokenizer gives it back, media placeholders removed."""
    from student.inputs import generation_suppress_tokens

    media = set(generation_suppress_tokens(processor))
    text = processor.tokenizer.decode([i for i in ids if i not in media])
    return text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def test_each_recipe_prompt_is_its_template_verbatim(tiny_models, tmp_path):
    from training.dry_run import media_token_counts

    model = tiny_models["omni"]
    # EchoInk-R1: problem + " Options:\n" + the published "A. ..." lines + "\n" + its instruction; image, audio, text
    sample, row, processor, ids = _first_prompt("echoink-r1", published_layouts.write_avqa_r1_6k(tmp_path / "e"), model)
    published = published_layouts.r1_6k_row(0)
    assert _user_text(processor, ids) == (published["problem"] + " Options:\n" + "\n".join(published["options"]) + "\n"
                                          + ECHOINK_INSTRUCTION)
    counts = media_token_counts(processor, ids)
    assert counts["<|IMAGE|>"] > 0 and counts["<|AUDIO|>"] > 0 and "<|VIDEO|>" not in counts
    assert sample.frames[0].width * sample.frames[0].height <= 200704
    # Omni-R1: "<question> Please choose the answer from the following options: <choices>"; audio only
    sample, row, processor, ids = _first_prompt("omni-r1", published_layouts.write_r1_aqa(tmp_path / "o"), model)
    assert _user_text(processor, ids) == (f"{row['question']} Please choose the answer from the following options: "
                                          f"{row['choices']!r}")
    counts = media_token_counts(processor, ids)
    assert counts["<|AUDIO|>"] > 0 and "<|IMAGE|>" not in counts and "<|VIDEO|>" not in counts
    # the text-only recipes: not one audio or vision token
    for recipe, write in (("omni-r1-text-only", published_layouts.write_avqa_annotation),
                          ("omni-r1-arc-easy", published_layouts.write_arc_easy)):
        sample, row, processor, ids = _first_prompt(recipe, write(tmp_path / recipe), model)
        assert media_token_counts(processor, ids) == {}, recipe
        assert sample.frames is None and sample.audio is None
        assert _user_text(processor, ids).endswith(f"Please choose the answer from the following options: "
                                                   f"{row['choices']!r}")


def test_published_rows_that_cannot_be_used_are_listed_and_skipped_only_when_asked(tiny_models, tmp_path, capsys):
    from training.sft_then_grpo import main

    data = published_layouts.write_avqa_r1_6k(tmp_path / "data", bad=True)
    next(data.glob("train/audios/*.wav")).unlink()  # a valid row whose audio is gone
    argv = _train("echoink-r1", data, tiny_models["omni"], tmp_path / "run", "--dry-run")
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "are invalid" in err and "file not found" in err and "--skip-invalid" in err
    main([*argv, "--skip-invalid"])
    out = capsys.readouterr().out
    reasons = [line for line in out.splitlines() if line.startswith("  left out: ")]
    assert len(reasons) == len(published_layouts.BAD["avqa-r1-6k"]) + 1
    assert any("file not found" in line for line in reasons)
    shutil.rmtree(data / "train" / "audios")  # every row's audio gone: the folder is wrong, said once
    with pytest.raises(SystemExit):
        main([*argv, "--skip-invalid"])
    assert "none of the" in capsys.readouterr().err


def test_published_data_has_no_traces_for_sft(tiny_models, tmp_path, capsys):
    from training.sft_then_grpo import main

    data = published_layouts.write_arc_easy(tmp_path / "data")
    with pytest.raises(SystemExit):
        main(_train("omni-r1-arc-easy", data, tiny_models["omni"], tmp_path / "run", "--stages", "sft,grpo"))
    assert "SFT trains on build-avrt's merged traces" in capsys.readouterr().err


def test_a_recipe_extends_another_and_the_old_corpus_key_still_works(tmp_path):
    text_only = load_config(RECIPES / "omni-r1-text-only.yaml")
    audio = load_config(RECIPES / "omni-r1.yaml")
    assert text_only.grpo == audio.grpo and text_only.prompt == audio.prompt
    assert (text_only.data.audio, audio.data.audio) == (False, True)
    assert text_only.data.path == audio.data.path
    old = tmp_path / "old.yaml"
    old.write_text("corpus: outputs/somewhere\n")
    assert load_config(old).data.path == "outputs/somewhere" == load_config(old).corpus
    assert load_config(RECIPES / "avrt.yaml", ["corpus=x"]).data.path == "x"
    with pytest.raises(ValueError, match="corpus and data.path both given"):
        load_config(old, ["data.path=y"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(UserError, match="bases loop"):
        load_config(loop)


def test_echoink_evaluation_prompts_are_its_eval_script_verbatim():
    """EchoInk's eval script (src/omniInstruct-v1_eval_valid.py) writes the options after a newline (no
    " Options:") and asks its base model with a plain instruction."""
    from student.inputs import student_prompt

    row = published_layouts.r1_6k_row(0)
    question, choices = row["problem"], published_layouts.OPTIONS
    lines = question + "\n" + "\n".join(row["options"]) + "\n"
    assert student_prompt(question, choices, "echoink_r1_eval") == lines + ECHOINK_INSTRUCTION
    assert student_prompt(question, choices, "echoink_r1_base") == (
        lines + "Please answer the following question based on the given image and audio. Please provide only the "
        "single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.")


def test_a_build_questions_folder_trains_an_audio_recipe_with_its_audio_only_rows(tiny_models, tmp_path, capsys):
    """build-questions writes OUT/manifest.jsonl; a clip that is an audio file has a row with `audio` alone,
    which the audio recipes train on and build-avrt (whose teachers need frames) refuses with its reason."""
    from corpus.manifest import read_manifest
    from tests.benchmark_layouts import tone
    from training.sft_then_grpo import main

    out = tmp_path / "questions"
    out.mkdir()
    tone(out / "rain.wav", 330)
    rows = [{"id": f"rain-q{i}", "audio": "rain.wav", "question": "What is heard?",
             "choices": ["rain", "a dog", "a bell", "traffic"], "answer": "A"} for i in range(2)]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(_train("omni-r1", out, tiny_models["omni"], tmp_path / "run", "--dry-run"))
    shown = capsys.readouterr().out
    assert "rows: 2 to train on, 0 left out" in shown and "<|AUDIO|>×" in shown
    refused = read_manifest(out / "manifest.jsonl").invalid
    assert len(refused) == 2 and "needs 'video' or both 'image' and 'audio'" in refused[0].reason
