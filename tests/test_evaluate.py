"""Evaluation mechanics on the tiny random student: media and modality ablation, batched generation,
resume, every benchmark format end to end, reports (accuracy itself is near chance and not tested)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from configs import RECIPES, UserError
from evaluation.benchmarks import BenchItem, load_avqa, load_dailyomni, load_manifest, load_mmar, load_omnibench
from evaluation.evaluate import (
    PREDICTIONS,
    Decoding,
    HFGenerator,
    evaluate,
    load_item_media,
    load_student,
    main,
    make_sample,
    parse_modalities,
    read_predictions,
    run,
)
from student.inputs import build_inputs, generation_suppress_tokens
from tests.scripted_server import Reply

FAST = Decoding(max_new_tokens=6)


@pytest.fixture(scope="module")
def student(tiny_models):
    return load_student(tiny_models["omni"], device="cpu")


class Counting:
    """Wraps a generator and records how many samples it was asked to generate."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, samples):
        self.calls.append(len(samples))
        out = self.inner.generate(samples)
        self.new_tokens = self.inner.new_tokens
        return out


def _generator(student, decoding=FAST):
    model, processor = student
    return HFGenerator(model, processor, decoding)


def _image_audio_files(root: Path, n: int) -> None:
    """OmniBench-style media: a still image and a short sound per item."""
    rng = np.random.default_rng(0)
    (root / "mm_data" / "image").mkdir(parents=True, exist_ok=True)
    (root / "mm_data" / "audio").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(root / "mm_data" / "image" / f"{i}.jpg")
        tone = 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * np.arange(int(16000 * 2.5)) / 16000)
        sf.write(root / "mm_data" / "audio" / f"{i}.wav", tone.astype(np.float32), 16000)


def test_parse_modalities():
    assert parse_modalities("av,a,v") == ["av", "a", "v"]
    assert parse_modalities("va, a,a") == ["av", "a"]
    assert parse_modalities("a,t") == ["a", "t"] and parse_modalities("t") == ["t"]
    for bad in ("x", "aav", "", "at", "tt"):
        with pytest.raises(ValueError):
            parse_modalities(bad)


def test_decoding_greedy_by_default_sampling_settable():
    assert Decoding().generate_kwargs()["do_sample"] is False
    kwargs = Decoding(temperature=0.7, top_p=0.9).generate_kwargs()
    assert kwargs["do_sample"] and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9
    assert Decoding(temperature=0.7).describe()["strategy"] == "sampling"


# ---------------------------------------------------------------- ablation reaches the processor inputs

def _text_ids(batch, processor) -> list[int]:
    media = set(generation_suppress_tokens(processor))
    return [t for t in batch["input_ids"][0].tolist() if t not in media]


def test_video_ablation_drops_only_audio_or_frames(student, synthetic_data):
    _, processor = student
    item = load_manifest(synthetic_data / "manifest.jsonl")[0]
    media = load_item_media(item)
    assert len(media.frames) == 8 and media.frames_are_video and media.audio is not None
    batches = {s: build_inputs(processor, [make_sample(item, media, s)]) for s in ("av", "a", "v")}
    assert {"pixel_values_videos", "input_features"} <= batches["av"].keys()
    assert "input_features" in batches["a"] and "pixel_values_videos" not in batches["a"]
    assert "pixel_values_videos" in batches["v"] and "input_features" not in batches["v"]
    assert torch.equal(batches["av"]["pixel_values_videos"], batches["v"]["pixel_values_videos"])
    assert torch.equal(batches["av"]["input_features"], batches["a"]["input_features"])
    # the prompt text (question, options, instruction) is the same in every setting
    assert _text_ids(batches["av"], processor) == _text_ids(batches["a"], processor) == _text_ids(batches["v"], processor)


def test_image_ablation_and_still_image_input(student, tmp_path):
    _, processor = student
    _image_audio_files(tmp_path, 1)
    item = BenchItem("o0", "What happens?", ("a", "b", "c", "d"), "A",
                     image=str(tmp_path / "mm_data/image/0.jpg"), audio=str(tmp_path / "mm_data/audio/0.wav"))
    media = load_item_media(item)
    assert not media.frames_are_video and len(media.frames) == 1
    assert len(media.audio) == int(16000 * 2.5), "short clips are not padded"
    from media import MediaSettings

    assert len(load_item_media(item, MediaSettings(audio_seconds=1.0)).audio) == 16000, "centred window"
    av = build_inputs(processor, [make_sample(item, media, "av")])
    assert {"pixel_values", "input_features"} <= av.keys() and "pixel_values_videos" not in av
    a = build_inputs(processor, [make_sample(item, media, "a")])
    assert "pixel_values" not in a and "input_features" in a
    v = build_inputs(processor, [make_sample(item, media, "v")])
    assert "pixel_values" in v and "input_features" not in v


# ---------------------------------------------------------------- generation, resume, media errors

def test_batched_left_padded_generation_matches_one_by_one(student, synthetic_data):
    items = load_manifest(synthetic_data / "manifest.jsonl")[:3]
    media = [load_item_media(it) for it in items]
    samples = [make_sample(it, md, "av") for it, md in zip(items, media)]
    generator = _generator(student, Decoding(max_new_tokens=8))
    batched = generator.generate(samples)
    assert generator.last_inputs["attention_mask"][:, -1].all(), "left padding"
    assert generator.last_inputs["attention_mask"].sum(1).unique().numel() > 1, "prompts of different lengths"
    single = [generator.generate([s])[0] for s in samples]
    assert batched == single


def test_sampling_is_seeded(student, synthetic_data):
    item = load_manifest(synthetic_data / "manifest.jsonl")[0]
    sample = make_sample(item, load_item_media(item), "av")
    generator = _generator(student, Decoding(max_new_tokens=12, temperature=1.0, seed=3))
    assert generator.generate([sample]) == generator.generate([sample])


def test_resume_skips_done_items_and_survives_a_torn_line(student, synthetic_data, tmp_path):
    items = load_manifest(synthetic_data / "manifest.jsonl")
    counting = Counting(_generator(student))
    rows = evaluate(items[:3], counting, ["av", "v"], tmp_path, "letter", batch_size=2)
    assert len(rows) == 6 and sum(counting.calls) == 6
    assert {(r["id"], r["modality"]) for r in rows} == {(i.id, m) for i in items[:3] for m in ("av", "v")}
    counting.calls.clear()
    assert len(evaluate(items[:3], counting, ["av", "v"], tmp_path, "letter")) == 6
    assert counting.calls == [], "nothing left to do"
    # a crash mid-write leaves a torn line: it is cut off, and only the new item is generated
    with (tmp_path / PREDICTIONS).open("a") as handle:
        handle.write('{"id": "syn0003_000030", "modality": "av", "outp')
    rows = evaluate(items[:4], counting, ["av", "v"], tmp_path, "letter")
    assert sum(counting.calls) == 2 and len(rows) == 8
    assert len(read_predictions(tmp_path / PREDICTIONS)) == 8


def test_media_errors_are_rows_not_crashes(student, synthetic_data, tmp_path):
    items = {i.id: i for i in load_manifest(synthetic_data / "odd_manifest.jsonl")}
    chosen = [items["no_audio"], items["missing"], items["short_3s"]]
    rows = evaluate(chosen, _generator(student), ["av", "v"], tmp_path, "letter", batch_size=3)
    by = {(r["id"], r["modality"]): r for r in rows}
    assert by[("no_audio", "av")]["error"] == "audio: no audio track" and not by[("no_audio", "av")]["correct"]
    assert by[("no_audio", "v")]["error"] is None and by[("no_audio", "v")]["output"] is not None
    assert by[("missing", "v")]["error"].startswith("frames: file not found")
    assert by[("short_3s", "av")]["error"] is None


# ---------------------------------------------------------------- each benchmark format, end to end

def test_every_benchmark_format_runs_on_the_tiny_student(student, synthetic_data, tmp_path):
    generator = _generator(student)
    # AVQA: annotation JSON + video dir
    avqa = load_avqa(synthetic_data / "avqa.json")[:2]
    assert Path(avqa[0].video).exists()
    # Daily-Omni: Videos/{id}/{id}_video.mp4 and lettered choices
    manifest = load_manifest(synthetic_data / "manifest.jsonl")[:2]
    qa = []
    for row in manifest:
        vid = Path(row.video).stem
        (tmp_path / "daily" / "Videos" / vid).mkdir(parents=True)
        shutil.copy(row.video, tmp_path / "daily" / "Videos" / vid / f"{vid}_video.mp4")
        qa.append({"Question": row.question, "Choice": [f"{'ABCD'[k]}. {c}" for k, c in enumerate(row.choices)],
                   "Answer": row.answer, "video_id": vid, "Type": "Reasoning", "video_duration": "30s"})
    (tmp_path / "daily" / "qa.json").write_text(json.dumps(qa))
    daily = load_dailyomni(tmp_path / "daily" / "qa.json")
    # OmniBench: image + audio under mm_data/, gold as option text
    _image_audio_files(tmp_path / "omni", 2)
    rows = [{"index": i, "task type": "Count & Quantity", "audio type": "sound event", "question": "How many?",
             "options": ["one", "two", "three", "four"], "answer": "three", "audio_path": f"{i}.wav",
             "image_path": f"{i}.jpg"} for i in range(2)]
    (tmp_path / "omni" / "omnibench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    omni = load_omnibench(tmp_path / "omni" / "omnibench.jsonl")
    # MMAR: audio only, gold as option text, token-set scoring
    meta = [{"id": f"m{i}", "audio_path": f"./mm_data/audio/{i}.wav", "question": "Which pitch?",
             "choices": ["low pitch", "high pitch"], "answer": "high pitch", "modality": "sound",
             "category": "Signal Layer", "sub-category": "Pitch"} for i in range(2)]
    (tmp_path / "omni" / "MMAR-meta.json").write_text(json.dumps(meta))
    mmar = load_mmar(tmp_path / "omni" / "MMAR-meta.json")

    for name, items, settings, rule in (("avqa", avqa, ["av"], "letter"), ("daily", daily, ["av"], "letter"),
                                        ("omni", omni, ["av", "a", "v"], "letter"), ("mmar", mmar, ["a"], "token_set")):
        rows = evaluate(items, generator, settings, tmp_path / "out" / name, rule, batch_size=2)
        assert len(rows) == len(items) * len(settings), name
        assert all(r["error"] is None and isinstance(r["output"], str) for r in rows), (name, rows)
    assert {r["gold"] for r in read_predictions(tmp_path / "out" / "omni" / PREDICTIONS)} == {"C"}
    # token-set rule, with known outputs: a chosen letter is compared as its option text, and an
    # answer written as text is matched by its tokens
    class Scripted:
        new_tokens: list[int] = []

        def generate(self, samples):
            return ["<think>high</think><answer>B</answer>", "<think>x</think><answer>the high pitch</answer>"][:len(samples)]

    rows = evaluate(mmar, Scripted(), ["a"], tmp_path / "out" / "mmar-scripted", "token_set", batch_size=2)
    assert [(r["letter"], r["prediction"], r["correct_official"]) for r in rows] == [
        ("B", "high pitch", True), ("B", "high pitch", True)], rows


# ---------------------------------------------------------------- the CLI

def test_cli_writes_predictions_and_report_and_resumes(tiny_models, synthetic_data, tmp_path, monkeypatch, capsys):
    teacher = tmp_path / "teachers.jsonl"
    items = load_manifest(synthetic_data / "manifest.jsonl")
    teacher.write_text("".join(json.dumps({"id": it.id, "vision_answer": it.answer if k % 2 else None,
                                           "audio_answer": it.answer, "answer": it.answer}) + "\n"
                               for k, it in enumerate(items[:3])))
    out = tmp_path / "eval"
    argv = ["--model", str(tiny_models["omni"]), "--benchmark", "manifest", "--data",
            str(synthetic_data / "manifest.jsonl"), "--modalities", "av,a,v", "--limit", "3", "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "2", "--device", "cpu", "--quiet",
            "--difficulty-from", str(teacher)]
    report = run(argv)
    assert json.loads((out / "report.json").read_text()) == report
    assert report["decoding"] == {"strategy": "greedy", "max_new_tokens": 6, "batch_size": 2}
    assert report["n_items"] == 3 and list(report["settings"]) == ["av", "a", "v"]
    for setting, summary in report["settings"].items():
        assert summary["n"] == 3
        assert summary["accuracy"] == sum(r["correct"] for r in read_predictions(out / PREDICTIONS)
                                          if r["modality"] == setting) / 3
        assert summary["parse_failure_rate"] is not None and summary["per_category"]
        assert summary["per_difficulty"]["easy"]["n"] == 1 and summary["per_difficulty"]["medium"]["n"] == 2
    assert report["prompt"]["name"] == "student" and len(report["prompt"]["sha256"]) == 64
    md = (out / "report.md").read_text()
    assert "## Accuracy per modality setting" in md and "## Accuracy per difficulty" in md
    assert len(read_predictions(out / PREDICTIONS)) == 9

    calls = []
    original = HFGenerator.generate
    monkeypatch.setattr(HFGenerator, "generate", lambda self, s: calls.append(len(s)) or original(self, s))
    main(argv[:-2])  # same settings: nothing to redo
    assert calls == []
    argv[argv.index("--limit") + 1] = "4"
    main(argv[:-2])  # one more item: only it is generated, once per setting
    assert sum(calls) == 3 and len(read_predictions(out / PREDICTIONS)) == 12
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--temperature", "0.7"])
    assert stopped.value.code == 2 and "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--modalities" in capsys.readouterr().out


def test_cli_refuses_a_setting_the_benchmark_lacks(tiny_models, tmp_path):
    _image_audio_files(tmp_path, 1)
    meta = [{"id": "m0", "audio_path": "mm_data/audio/0.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x"}]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="lacks"):
        run(["--model", str(tiny_models["omni"]), "--benchmark", "mmar", "--data", str(tmp_path / "meta.json"),
              "--modalities", "av", "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------- published layouts through the CLI

@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    from tests.benchmark_layouts import write_layouts
    from tests.published_layouts import write_avqa_r1_6k

    root = tmp_path_factory.mktemp("published")
    return {**write_layouts(root), "avqa-r1-6k": write_avqa_r1_6k(root, n=1, valid_n=2)}


def _cli(tiny_models, benchmark, data, out, *extra):
    return ["--model", str(tiny_models["omni"]), "--benchmark", benchmark, "--data", *map(str, data),
            "--out", str(out), "--max-new-tokens", "4", "--device", "cpu", "--quiet", *extra]


def test_mmar_may_2025_runs_reports_unscorable_rows_and_both_scores(tiny_models, layouts, tmp_path):
    report = run(_cli(tiny_models, "mmar", [layouts["mmar_2025"]], tmp_path / "o", "--limit", "3"))
    a = report["settings"]["a"]
    assert (a["n"], a["scorable"], a["unscorable"], a["unscorable_ids"]) == (3, 2, 1, ["mmar-2"])
    assert a["accuracy_official"] is not None and "disagreements" in a and report["status"] == "ok"
    assert set(report["scoring"]) == {"exact", "official"} and report["scoring"]["official"].startswith("token_set")
    rows = {r["id"]: r for r in read_predictions(tmp_path / "o" / PREDICTIONS)}
    assert rows["mmar-2"]["correct"] is None and isinstance(rows["mmar-2"]["correct_official"], bool)
    assert rows["mmar-2"]["gold_text"] == "American\nColombian"
    md = (tmp_path / "o" / "report.md").read_text()
    assert "official %" in md and "`mmar-2`" in md


def test_avqa_repository_layout_with_and_without_media_root(tiny_models, layouts, tmp_path, capsys):
    repo = layouts["avqa"]
    report = run(_cli(tiny_models, "avqa", [repo], tmp_path / "repo", "--limit", "1"))
    assert report["settings"]["av"]["media_errors"] == 0
    away = tmp_path / "annotation" / "val_qa.json"
    away.parent.mkdir()
    shutil.copy(repo / "data" / "annotation" / "val_qa.json", away)
    with pytest.raises(UserError, match="--media-root"):
        run(_cli(tiny_models, "avqa", [away], tmp_path / "away"))
    report = run(_cli(tiny_models, "avqa", [away], tmp_path / "away", "--limit", "1",
                      "--media-root", str(repo / "data" / "video")))
    assert report["settings"]["av"]["media_errors"] == 0 and report["n_items"] == 1


def test_the_documented_evaluation_commands_run_one_after_another(tiny_models, layouts, tmp_path, monkeypatch):
    """The README's and docs/evaluation.md's evaluation lines, in page order and as written (``$S`` the tiny
    student, ``data/`` the published layouts), each on one item: every one exits 0, none refuses the
    folder an earlier one wrote (each variant has its own ``--out``)."""
    from tests.documented import documented_commands, run_documented

    (tmp_path / "outputs" / "train" / "avrt" / "grpo").mkdir(parents=True)
    (tmp_path / "outputs" / "train" / "avrt" / "grpo" / "final").symlink_to(tiny_models["omni"])
    (tmp_path / "data").symlink_to(layouts["avqa"].parent)
    monkeypatch.chdir(tmp_path)
    lines = [c for _, c in documented_commands() if c.startswith("python -m evaluation.evaluate --model $S ")]
    assert len(lines) >= 7 and any("OmniBench-hub" in line for line in lines)
    for line in lines:
        code = run_documented(line, {"S": "outputs/train/avrt/grpo/final"},
                              ("--limit", "1", "--max-new-tokens", "2", "--device", "cpu", "--quiet"))
        assert code == 0, line
    assert {p.name for p in (tmp_path / "outputs" / "eval").iterdir()} >= {"avqa", "omnibench", "omnibench-hub", "mmau",
                                                                            "mmau-with-without-audio", "avqa-r1-6k"}


def test_a_run_where_every_item_failed_exits_non_zero_and_says_so(tiny_models, layouts, tmp_path):
    broken = tmp_path / "AVQA"
    shutil.copytree(layouts["avqa"] / "data" / "annotation", broken / "data" / "annotation")
    (broken / "data" / "video").mkdir(parents=True)
    for name in ("-0aXnCWdnw8_000030", "0Fk3MQ5Wfb8_000110"):
        (broken / "data" / "video" / f"{name}.mp4").write_bytes(b"not a video")
    with pytest.raises(SystemExit, match="every item failed.*not a result"):
        run(_cli(tiny_models, "avqa", [broken], tmp_path / "o"))
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["status"].startswith("failed") and report["settings"]["av"]["all_failed"]
    assert "NOT A RESULT" in (tmp_path / "o" / "report.md").read_text()


def test_text_only_setting_writes_both_settings_and_sends_no_media_hf(tiny_models, layouts, tmp_path, monkeypatch):
    """Omni-R1's "with / without audio" on the hf backend: ``--modalities a,t``; ``t``'s inputs hold
    no media tensors and no media token."""
    from student.inputs import MEDIA_KEYS

    seen = []
    generate = HFGenerator.generate

    def recording(self, samples):
        out = generate(self, samples)
        media_ids = set(generation_suppress_tokens(self.processor))
        for sample, ids in zip(samples, self.last_inputs["input_ids"].tolist()):
            seen.append(("t" if sample.audio is None and sample.frames is None else "a",
                         sorted(k for k in MEDIA_KEYS if k in self.last_inputs), bool(media_ids & set(ids))))
        return out

    monkeypatch.setattr(HFGenerator, "generate", recording)
    out = tmp_path / "o"
    report = run(_cli(tiny_models, "mmau", [layouts["mmau"]], out, "--modalities", "a,t", "--limit", "1"))
    assert list(report["settings"]) == ["a", "t"] and report["status"] == "ok"
    assert {(r["modality"], r["error"]) for r in read_predictions(out / PREDICTIONS)} == {("a", None), ("t", None)}
    by_setting = {setting: (keys, tokens) for setting, keys, tokens in seen}
    assert by_setting["t"] == ([], False), "text only: no media tensors, no media token"
    assert "input_features" in by_setting["a"][0] and by_setting["a"][1]
    assert "| t (text only) |" in (out / "report.md").read_text()


def test_bad_data_stops_with_a_message_not_a_traceback(tiny_models, tmp_path, capsys):
    (tmp_path / "MMAR-meta.json").write_text("{not json")
    with pytest.raises(UserError, match="MMAR-meta.json: not JSON"):
        run(_cli(tiny_models, "mmar", [tmp_path], tmp_path / "o"))
    with pytest.raises(UserError, match="no such file"):
        run(_cli(tiny_models, "mmau", [tmp_path / "nope.json"], tmp_path / "o"))
    with pytest.raises(UserError, match="--backend openai needs --base-url"):
        run(_cli(tiny_models, "mmau", [tmp_path], tmp_path / "o", "--backend", "openai"))
    meta = [{"id": "u1", "audio_id": "a.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x"}]
    (tmp_path / "mmau-test-mini.json").write_text(json.dumps(meta))
    Image.new("RGB", (2, 2)).save(tmp_path / "a.wav", format="PNG")  # exists; only the model is bad here
    with pytest.raises(UserError, match="--model .*no config.json"):
        run(["--model", str(tmp_path), "--benchmark", "mmau", "--data", str(tmp_path), "--out", str(tmp_path / "o2"),
             "--device", "cpu"])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="--model .*cannot load it"):
        run(["--model", str(tmp_path / "m"), "--benchmark", "mmau", "--data", str(tmp_path), "--out",
             str(tmp_path / "o3"), "--device", "cpu"])


# ---------------------------------------------------------------- the OpenAI-API backend

def test_openai_backend_sends_the_student_input_and_scores_like_local(layouts, scripted_server, synthetic_data,
                                                                     tiny_models, tmp_path):
    import base64
    import io

    import soundfile as sf

    from evaluation.api_generator import OpenAIGenerator
    from evaluation.benchmarks import load_benchmark
    from evaluation.config import Decoding, ServerConfig
    from student.inputs import student_prompt
    from student.served import api_messages, suppress_bias

    scripted_server.set_handler("student", lambda request: "<think>t</think><answer>C major chord on a piano</answer>")
    bias = suppress_bias(str(tiny_models["omni"]))
    generator = OpenAIGenerator(ServerConfig(base_url=scripted_server.url, served_model="student", max_in_flight=2,
                                             retries=0), Decoding(max_new_tokens=7), logit_bias=bias)
    items = load_benchmark("omnibench", layouts["omnibench"])
    rows = evaluate(items, generator, ["av"], tmp_path / "omni", "letter", batch_size=2)
    assert [r["letter"] for r in rows] == ["B", "B"] and [r["correct"] for r in rows] == [True, False]
    scripted_server.reset_counts()
    evaluate(items[:1], generator, ["av"], tmp_path / "first", "letter")
    (request,) = scripted_server.requests
    assert request["temperature"] == 0.0 and request["max_tokens"] == 7 and request["logit_bias"] == bias and bias
    parts = request["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "input_audio", "text"]
    assert parts[2]["text"] == student_prompt(items[0].question, items[0].choices)
    media = load_item_media(items[0])
    samples, rate = sf.read(io.BytesIO(base64.b64decode(parts[1]["input_audio"]["data"])), dtype="float32")
    assert rate == 16000 and np.array_equal(samples, media.audio), "the exact samples, not re-quantised"
    png = Image.open(io.BytesIO(base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])))
    assert np.array_equal(np.asarray(png), np.asarray(media.frames[0]))

    # a video item, separate: the 8 frames as one video of JPEGs, the very bytes the local backend decoded
    video_item = load_manifest(synthetic_data / "manifest.jsonl")[0]
    video_media = load_item_media(video_item)
    (part, audio, text) = api_messages(make_sample(video_item, video_media, "av"), layout="separate")[0]["content"]
    url = part["video_url"]["url"]
    assert part["type"] == "video_url" and url.startswith("data:video/jpeg;base64,")
    frames = [Image.open(io.BytesIO(base64.b64decode(b))) for b in url.split(",", 1)[1].split(",")]
    assert len(frames) == 8 and all(np.array_equal(np.asarray(f), np.asarray(g))
                                    for f, g in zip(frames, video_media.frames))

    # aligned (the generator's default, as the hf backend's): one lossless clip with its sound, and
    # vLLM's audio-in-video kwargs; the a and v settings have nothing to align
    scripted_server.reset_counts()
    evaluate([video_item], generator, ["av", "a", "v"], tmp_path / "aligned", "letter")
    by_parts = {tuple(p["type"] for p in r["messages"][0]["content"]): r for r in scripted_server.requests}
    assert set(by_parts) == {("video_url", "text"), ("input_audio", "text")}, "av: one video; a: audio; v: one video"
    aligned = next(r for r in scripted_server.requests if r.get("mm_processor_kwargs"))
    assert aligned["messages"][0]["content"][0]["video_url"]["url"].startswith("data:video/x-matroska;base64,")
    assert aligned["mm_processor_kwargs"]["use_audio_in_video"] is True
    assert sum(bool(r.get("mm_processor_kwargs")) for r in scripted_server.requests) == 1

    # a request that fails for good is that item's error, not the run's
    scripted_server.queue("student", Reply(status=400))
    rows = evaluate(items[:1], generator, ["a"], tmp_path / "fail", "letter")
    assert rows[0]["error"].startswith("generation: ") and "HTTP 400" in rows[0]["error"]
    from evaluation.report import summarize

    summary = summarize(rows, {"benchmark": "omnibench"})["settings"]["a"]
    assert (summary["generation_errors"], summary["media_errors"], summary["all_failed"]) == (1, 0, True)


@pytest.mark.slow
def test_openai_backend_through_transformers_serve_matches_the_local_backend(transformers_server, tiny_models,
                                                                            layouts, tmp_path):
    """Same items, greedy: the tiny student served by `transformers serve` writes what it writes locally."""
    predictions = {}
    for benchmark, data, setting in (("omnibench", layouts["omnibench"], "av"), ("mmar", layouts["mmar_2026"], "a")):
        common = ["--benchmark", benchmark, "--data", str(data), "--max-new-tokens", "12", "--quiet",
                  "--modalities", setting]
        local = run([*common, "--model", str(tiny_models["omni"]), "--device", "cpu", "--out", str(tmp_path / "hf")])
        api = run([*common, "--backend", "openai", "--base-url", transformers_server,
                   "--served-model", str(tiny_models["omni"]), "--model", str(tiny_models["omni"]),
                   "--out", str(tmp_path / "openai"), "--max-in-flight", "2"])
        for name, report in (("hf", local), ("openai", api)):
            rows = read_predictions(tmp_path / name / PREDICTIONS)
            assert all(r["error"] is None for r in rows), rows
            predictions[name, benchmark] = {r["id"]: (r["output"], r["letter"]) for r in rows}
        assert api["backend"]["kind"] == "openai" and local["backend"]["kind"] == "hf"
        assert predictions["openai", benchmark] == predictions["hf", benchmark], benchmark
        assert len(predictions["hf", benchmark]) >= 2
        shutil.rmtree(tmp_path / "hf"), shutil.rmtree(tmp_path / "openai")


def test_text_only_setting_sends_no_media_openai_and_avqa_r1_6k_reads_its_valid_split(layouts, scripted_server,
                                                                                     tmp_path):
    """The openai backend: ``--modalities a,t`` sends the audio in ``a`` and only the prompt text in ``t``;
    ``t`` alone decodes and needs no media; ``avqa-r1-6k`` sends image + audio and scores by EchoInk's rule."""
    from evaluation.benchmarks import load_benchmark
    from student.inputs import student_prompt

    scripted_server.set_handler("student", lambda request: "<think>t</think><answer>B</answer>")
    api = ["--backend", "openai", "--base-url", scripted_server.url, "--served-model", "student", "--retries", "0",
           "--max-new-tokens", "4", "--quiet"]
    report = run(["--benchmark", "mmau", "--data", str(layouts["mmau"]), "--out", str(tmp_path / "mmau"),
                  "--modalities", "a,t", *api])
    assert list(report["settings"]) == ["a", "t"] and report["settings"]["t"]["n"] == 2
    parts = sorted(tuple(p["type"] for p in r["messages"][-1]["content"]) for r in scripted_server.requests)
    assert parts == [("input_audio", "text")] * 2 + [("text",)] * 2, "t sends no media part"
    texts = {r["messages"][-1]["content"][0]["text"] for r in scripted_server.requests
             if len(r["messages"][-1]["content"]) == 1}
    assert texts == {student_prompt(i.question, i.choices) for i in load_benchmark("mmau", layouts["mmau"])}

    class TextOnly:
        def generate(self, samples):
            assert all(s.frames is None and s.audio is None for s in samples)
            return ["<answer>A</answer>"] * len(samples)

    def no_decoding(*args, **kwargs):
        raise AssertionError("t decodes no media")

    items = load_benchmark("mmau", layouts["mmau"])
    assert len(evaluate(items, TextOnly(), ["t"], tmp_path / "direct", "token_set", load_media=no_decoding)) == 2

    away = tmp_path / "away"  # the file without its audios: t still runs, a asks for --media-root
    away.mkdir()
    shutil.copy(layouts["mmau"] / "mmau-test-mini.json", away)
    assert run(["--benchmark", "mmau", "--data", str(away), "--out", str(tmp_path / "t"), "--modalities", "t",
                *api])["settings"]["t"]["media_errors"] == 0
    with pytest.raises(UserError, match="--media-root"):
        run(["--benchmark", "mmau", "--data", str(away), "--out", str(tmp_path / "a"), "--modalities", "a", *api])

    scripted_server.reset_counts()
    folder = layouts["avqa-r1-6k"]
    report = run(["--benchmark", "avqa-r1-6k", "--data", str(folder), "--out", str(tmp_path / "r1"), *api])
    assert report["scoring"]["official"].startswith("echoink: ") and report["n_items"] == 2
    assert report["data"] == str((folder / "valid" / "omni_rl_format_valid.json").resolve())
    assert report["settings"]["av"]["accuracy_official"] == 0.5, "golds A, B; every answer B"
    assert [tuple(p["type"] for p in r["messages"][-1]["content"]) for r in scripted_server.requests] == \
        [("image_url", "input_audio", "text")] * 2


def test_openai_backend_bounds_requests_in_flight_and_retries(layouts, scripted_server, tmp_path):
    import threading
    import time

    from evaluation.api_generator import OpenAIGenerator
    from evaluation.benchmarks import load_benchmark
    from evaluation.config import Decoding, ServerConfig

    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return "<answer>A</answer>"

    scripted_server.set_handler("student", slow)
    scripted_server.queue("student", Reply(status=503))  # the first request fails once, then is retried
    items = load_benchmark("mmar", layouts["mmar_2025"])
    generator = OpenAIGenerator(ServerConfig(base_url=scripted_server.url, served_model="student", max_in_flight=2,
                                             retries=2), Decoding(max_new_tokens=4))
    rows = evaluate(items, generator, ["a"], tmp_path, "token_set", batch_size=3)
    assert [r["error"] for r in rows] == [None, None, None] and [r["letter"] for r in rows] == ["A", "A", "A"]
    assert state["max"] == 2, "three requests at once, at most two in flight"
    assert scripted_server.counts["student"] == 4 and generator.requests_sent == 3, "one retry"


def test_config_file_overrides_and_flags_and_trainer_defaults(tmp_path, capsys):
    from evaluation.config import EvalConfig
    from evaluation.evaluate import parse_config
    from media import MediaSettings
    from training.train_config import TrainConfig

    example = parse_config(["--config", "configs/eval/avqa.yaml"])
    assert example.benchmark == "avqa" and example.modalities == "av,a,v"
    defaults = EvalConfig(benchmark="mmar", data=[tmp_path], model="m")
    trainer = TrainConfig()
    assert defaults.decoding.max_new_tokens == trainer.grpo.max_completion_length
    assert defaults.layout == trainer.av_layout and defaults.media == MediaSettings()
    assert example.decoding.max_new_tokens == defaults.decoding.max_new_tokens  # the example states the default
    config = parse_config(["--config", "configs/eval/avqa.yaml", "--set", "decoding.max_new_tokens=1024",
                           "--set", "media.num_frames=4", "--max-new-tokens", "2048", "--backend", "openai",
                           "--base-url", "http://h:1/v1", "--served-model", "s", "--max-in-flight", "3"])
    assert config.decoding.max_new_tokens == 2048, "flags win over --set"
    assert config.media.num_frames == 4 and config.server.max_in_flight == 3 and config.batch_size == 4  # the file's
    served = parse_config(["--benchmark", "mmar", "--data", str(tmp_path), "--backend", "openai",
                           "--base-url", "http://h:1/v1", "--served-model", "s", "--max-in-flight", "3"])
    assert served.batch_size == 3, "openai: a batch is what can be in flight"
    from evaluation.evaluate import _backend

    recorded = _backend(served)  # run.json's backend: the trainer's layout, and what vLLM still does differently
    assert recorded["layout"] == "aligned" and "2 fps" in recorded["differs_from_hf"]
    assert "differs_from_hf" not in _backend(served.model_copy(update={"layout": "separate"}))
    with pytest.raises(UserError, match="decoding.nonsense: unknown key"):
        parse_config(["--config", "configs/eval/avqa.yaml", "--set", "decoding.nonsense=1"])


def test_a_student_is_asked_as_its_recipe_trained_it(layouts, scripted_server, tmp_path):
    """``--recipe NAME``, or the ``training_config.yaml`` beside a checkpoint, sets the prompt, system turn, image
    size cap and answer budget; what the command sets still wins."""
    from evaluation.benchmarks import load_benchmark
    from evaluation.evaluate import parse_config
    from student.inputs import student_prompt
    from training.train_config import SAVED_CONFIG

    scripted_server.set_handler("student", lambda request: "<think>t</think><answer>B</answer>")
    api = ["--backend", "openai", "--base-url", scripted_server.url, "--served-model", "student", "--retries", "0",
           "--quiet"]
    folder = layouts["avqa-r1-6k"]
    report = run(["--benchmark", "avqa-r1-6k", "--data", str(folder), "--out", str(tmp_path / "e"),
                  "--recipe", "echoink-r1", *api])
    assert report["prompt"]["name"] == "echoink_r1" and report["decoding"]["max_new_tokens"] == 768
    items = load_benchmark("avqa-r1-6k", folder)
    sent = [r["messages"][-1]["content"][-1]["text"] for r in scripted_server.requests]
    assert sent == [student_prompt(i.question, i.choices, "echoink_r1") for i in items]
    assert all(r["max_tokens"] == 768 for r in scripted_server.requests)

    checkpoint = tmp_path / "omni-r1-student"  # a trainer's final/: its saved config names its recipe's prompt
    checkpoint.mkdir()
    (checkpoint / SAVED_CONFIG).write_text(f"base: {RECIPES / 'omni-r1.yaml'}\n")
    common = ["--benchmark", "mmau", "--data", str(layouts["mmau"]), "--model", str(checkpoint)]
    config = parse_config(common)
    assert (config.prompt, config.decoding.max_new_tokens, config.system) == ("omni_r1", 256, None)
    config = parse_config([*common, "--prompt", "student", "--max-new-tokens", "9", "--recipe", "echoink-r1"])
    assert (config.prompt, config.decoding.max_new_tokens, config.image_max_pixels) == ("student", 9, 200704)
    with pytest.raises(UserError, match="--recipe nope: no such recipe"):
        parse_config([*common, "--recipe", "nope"])
