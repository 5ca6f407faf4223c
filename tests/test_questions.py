"""build-questions: the pure checks, and the flow against the scripted OpenAI-compatible server (each
rejection reason, the blind filter, letter balance, an outage, a swapped writer, kill -9 and resume)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from filters.answers import LETTERS
from filters.questions import (
    Bounds,
    WrittenQuestion,
    answer_position,
    check_question,
    parse_written,
    place_answer,
)
from tests.scripted_server import Reply, ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"question": "Which animal makes the loudest sound in the clip?", "correct_answer": "A barking dog",
        "distractors": ["A meowing cat", "A crowing rooster", "A mooing cow"]}


# ----------------------------------------------------------------------------- pure checks


def _q(**change) -> WrittenQuestion:
    data = {**GOOD, **change}
    return WrittenQuestion(data["question"], data["correct_answer"], tuple(data["distractors"]))


@pytest.mark.parametrize("change, reason", [
    ({}, ""),
    ({"distractors": ["a barking dog!", "A crowing rooster", "A mooing cow"]}, "correct answer repeated among the distractors"),
    ({"distractors": ["A meowing cat", "a meowing cat", "A mooing cow"]}, "options not distinct after normalising"),
    ({"distractors": ["A meowing cat", "All of the above", "A mooing cow"]}, "option refers to the other options"),
    ({"distractors": ["A meowing cat", "None of these", "A mooing cow"]}, "option refers to the other options"),
    ({"question": "Which?"}, "question length out of bounds"),
    ({"question": "word " * 41}, "question length out of bounds"),
    ({"correct_answer": "dog " * 21}, "option length out of bounds"),
    ({"distractors": ["A meowing cat", " ", "A mooing cow"]}, "empty question or option"),
])
def test_each_check_gives_its_reason(change, reason):
    said = check_question(_q(**change), Bounds())
    assert said.startswith(reason) and bool(said) == bool(reason), said


def test_the_writer_json_must_match_the_schema():
    assert parse_written(json.dumps({"questions": [GOOD]}))[1] == ""
    assert parse_written("Here are your questions")[1].startswith("writer output is not JSON")
    assert "2 distractors, not 3" in parse_written(json.dumps({"questions": [{**GOOD, "distractors": ["a", "b"]}]}))[1]
    assert "no 'questions' list" in parse_written(json.dumps([GOOD]))[1]
    assert "correct_answer is not a text" in parse_written(json.dumps({"questions": [{**GOOD, "correct_answer": 3}]}))[1]
    assert "2 questions, not 1 to 1" in parse_written(json.dumps({"questions": [GOOD, GOOD]}))[1]
    assert parse_written(json.dumps({"questions": [GOOD, GOOD]}), 2)[1] == ""
    assert "longer than its maxLength" in parse_written(json.dumps({"questions": [{**GOOD, "correct_answer": "x" * 400}]}))[1]


def test_the_code_places_the_answer_balanced_and_the_same_on_a_rerun():
    positions = Counter(answer_position(f"clip{i}", 0) for i in range(800))
    assert set(positions) == {0, 1, 2, 3} and all(160 <= n <= 240 for n in positions.values()), positions
    choices, letter = place_answer(_q(), "clip7", 0)
    assert choices[LETTERS.index(letter)] == GOOD["correct_answer"] and sorted(choices) == sorted([GOOD["correct_answer"], *GOOD["distractors"]])
    assert place_answer(_q(), "clip7", 0) == (choices, letter)  # seeded by the clip's id
    assert len({place_answer(_q(), "clip7", 0, seed=s)[1] for s in range(20)}) > 1


def test_captions_from_audiosetcaps_csv_and_jsonl(tmp_path):
    from corpus.clips import Clip, read_captions, with_captions

    (tmp_path / "caps.csv").write_text('id,caption\nYabc_000030,"A dog barks, then a car passes."\nxyz_000010,Rain.\n')
    (tmp_path / "caps.jsonl").write_text(json.dumps({"id": "abc_000030", "caption": "Barking."}) + "\n")
    clips = [Clip("abc_000030", video="a.mp4"), Clip("xyz_000010", video="b.mp4"), Clip("none", video="c.mp4")]
    found = with_captions(clips, read_captions(tmp_path / "caps.csv"))
    assert [(c.id, c.caption) for c in found] == [("abc_000030", "A dog barks, then a car passes."), ("xyz_000010", "Rain.")]
    assert with_captions(clips, read_captions(tmp_path / "caps.jsonl"))[0].caption == "Barking."


def test_config_roles_get_their_prompts_and_checks():
    from flows.questions_config import load_questions_config

    cfg = load_questions_config(ROOT / "configs/build/questions.yaml")
    assert cfg.audio_captioner.media_only and cfg.audio_captioner.prompt == ""
    assert cfg.question_writer.prompt == "question_writer_audio"  # not the merger's prompt of its registry entry
    assert cfg.blind_solver.prompt == "blind_solver"
    with pytest.raises(ValueError, match="needs a vision_captioner"):
        load_questions_config(ROOT / "configs/build/questions.yaml", {"question_kind": "audio_visual"})
    with pytest.raises(ValueError, match="needs a merger model"):
        load_questions_config(ROOT / "configs/build/questions.yaml", {"question_writer": "audio-flamingo-3"})


# ----------------------------------------------------------------------------- the flow, scripted


def _config(path: Path, url: str, blind: bool = True, **extra) -> Path:
    def endpoint(model: str) -> dict:
        return {"model": model, "base_url": url, "temperature": 0.0, "max_tokens": 64, "timeout_s": 5, "retries": 1,
                "backoff_s": 0.05, "max_in_flight": 4}

    config = {"audio_captioner": endpoint("captioner"), "question_writer": endpoint("writer"),
              **({"blind_solver": endpoint("solver")} if blind else {}), "media": {"max_side": 160}, "shard_size": 3,
              **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def _clips(synthetic_data: Path, out: Path, n: int) -> Path:
    videos = [json.loads(line)["video"] for line in (synthetic_data / "manifest.jsonl").read_text().splitlines()]
    path = out / "clips.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "video": str(synthetic_data / videos[i % len(videos)])}) + "\n"
                            for i in range(n)))
    return path


def _prompt(request: dict) -> str:
    content = request["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def _json(*questions: dict) -> str:
    return json.dumps({"questions": list(questions)})


# what the writer answers for the clip whose caption says "C{i}"
PLAN = {
    0: _json(GOOD),
    1: "I would ask about the dog.",
    2: _json({**GOOD, "distractors": ["A meowing cat", "A mooing cow"]}),
    3: _json({**GOOD, "distractors": ["A meowing cat", "a meowing cat", "A mooing cow"]}),
    4: _json({**GOOD, "distractors": ["A meowing cat", "All of the above", "A mooing cow"]}),
    5: _json({**GOOD, "question": "Which?"}),
    6: _json({**GOOD, "correct_answer": "dog " * 25}),
    7: _json({**GOOD, "distractors": ["A barking dog", "A crowing rooster", "A mooing cow"]}),
    8: _json({**GOOD, "question": "Which animal, obviously the one that barks, is heard?"}),
    9: _json({**GOOD, "question": "Which animal is heard first in the recording?"}, {**GOOD, "question": "Why?"}),
}


def writer_handler(request: dict) -> Reply:
    assert request["response_format"]["type"] == "json_schema"  # vLLM's structured output
    found = re.search(r"\bC(\d+)\b", _prompt(request))
    if found:
        return Reply(PLAN[int(found.group(1))])
    tag = re.search(r"passes \((\w+)\)", _prompt(request)).group(1)  # _caption_handler's: one question per clip
    return Reply(_json({**GOOD, "question": f"Which animal barks loudest in clip {tag}?"}))


def solver_handler(request: dict) -> Reply:
    """Right only on questions that give the answer away ('obviously'), else always (A) or (B)."""
    text = _prompt(request)
    if "obviously" in text:
        letter = re.search(r"\(([A-D])\) A barking dog", text).group(1)
        return Reply(f"Answer: ({letter})")
    letter = re.search(r"\(([A-D])\) A barking dog", text).group(1)
    return Reply(f"Answer: ({'B' if letter == 'A' else 'A'})")


@pytest.fixture
def prefect_backend(prefect_api):
    """Flows here report to the session's temporary Prefect server."""


def test_each_rejection_reason_the_blind_filter_and_the_manifest(synthetic_data, scripted_server, prefect_backend, tmp_path):
    from corpus.manifest import read_manifest
    from flows.build_questions import build_questions

    clips = _clips(synthetic_data, tmp_path, 10)
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"id": f"c{i}", "caption": f"C{i}: a dog barks twice."}) + "\n" for i in range(10)))
    scripted_server.set_handler("writer", writer_handler)
    scripted_server.set_handler("solver", solver_handler)
    out = tmp_path / "out"
    stats = build_questions(clips=str(clips), out=str(out), captions=str(captions),
                            config=str(_config(tmp_path / "c.yaml", scripted_server.url, questions_per_clip=2)))
    assert scripted_server.counts == {"writer": 10, "solver": 3}  # no captioner: the captions were given

    reading = read_manifest(out / "manifest.jsonl")  # build-avrt's and the trainer's reader
    assert reading.invalid == [] and [s.id for s in reading.samples] == ["c0-q0", "c9-q0"]
    for sample in reading.samples:
        assert sample.choices[LETTERS.index(sample.answer)] == GOOD["correct_answer"] and sample.video
        assert sample.extra["captions"]["audio"].endswith("a dog barks twice.")
        assert set(sample.extra["prompt_sha256"]) == {"question_writer", "blind_solver"}
    clip_reasons = {r["id"]: (r["stage"], r["reason"]) for r in map(json.loads, (out / "rejected/clips.jsonl").read_text().splitlines())}
    assert clip_reasons["c1"][1].startswith("writer output is not JSON")
    assert clip_reasons["c2"][1].startswith("writer output does not match the schema")
    assert clip_reasons["c3"] == ("checks", clip_reasons["c3"][1]) and "options not distinct" in clip_reasons["c3"][1]
    assert "option refers to the other options" in clip_reasons["c4"][1]
    assert "question length out of bounds" in clip_reasons["c5"][1]
    assert "option length out of bounds" in clip_reasons["c6"][1]
    assert "correct answer repeated" in clip_reasons["c7"][1]
    assert clip_reasons["c8"][0] == "blind_solver" and "answerable without the media" in clip_reasons["c8"][1]
    dropped = [json.loads(line) for line in (out / "rejected/questions.jsonl").read_text().splitlines()]
    assert {(d["clip_id"], d["stage"]) for d in dropped} >= {("c8", "blind_solver"), ("c9", "checks")} and len(dropped) == 7

    assert stats["clip_funnel"]["with_questions"] == 2 and stats["questions_kept"] == 2 and stats["questions_written"] == 9
    assert stats["question_reasons"]["blind_solver"] == {"answerable without the media": 1}
    assert stats["clip_reasons"]["question_writer"] == {"writer output is not JSON": 1, "writer output does not match the schema": 1}
    assert sum(stats["answer_letters"].values()) == 2
    assert stats["answer_letters"] == {k: sum(s.answer == k for s in reading.samples) for k in "ABCD"}
    assert (out / "stats.png").stat().st_size > 0 and "Generated multiple-choice questions" in (out / "README.md").read_text()


def _caption_handler(request: dict) -> Reply:
    audio = next(p for p in request["messages"][-1]["content"] if p.get("type") == "input_audio")["input_audio"]["data"]
    return Reply(f"A dog barks and a car passes ({hashlib.sha256(audio.encode()).hexdigest()[:8]}).")


def test_captioner_rerun_swapped_writer_and_build_avrt_reads_the_manifest(synthetic_data, scripted_server,
                                                                           prefect_backend, tmp_path):
    from flows.build_avrt import build_avrt
    from flows.build_questions import build_questions
    from tests.pipeline_helpers import write_config
    from tests.scripted_server import plausible_handler

    clips = _clips(synthetic_data, tmp_path, 4)
    for model, handler in (("captioner", _caption_handler), ("writer", writer_handler), ("writer2", writer_handler),
                           ("solver", solver_handler)):
        scripted_server.set_handler(model, handler)
    config, out = _config(tmp_path / "c.yaml", scripted_server.url), tmp_path / "out"
    stats = build_questions(clips=str(clips), out=str(out), config=str(config))
    assert scripted_server.counts == {"captioner": 4, "writer": 4, "solver": 4}
    assert stats["questions_kept"] == 4 and stats["calls_sent"] == {"audio_captioner": 4, "question_writer": 4, "blind_solver": 4}
    first = (out / "manifest.jsonl").read_text()

    scripted_server.reset_counts()  # an unchanged re-run asks nothing and writes the same manifest
    build_questions(clips=str(clips), out=str(out), config=str(config))
    assert sum(scripted_server.counts.values()) == 0 and (out / "manifest.jsonl").read_text() == first

    scripted_server.reset_counts()  # a new writer: only the writer is asked again (same questions: cached solver)
    build_questions(clips=str(clips), out=str(out), config=str(config), overrides={"question_writer.model": "writer2"})
    assert scripted_server.counts == {"writer2": 4}

    rows = [json.loads(line) for line in first.splitlines()]
    assert all(r["models"]["question_writer"] == "writer" for r in rows)
    gold = {r["id"]: r["answer"] for r in rows}

    def teacher(request):
        for row_id, letter in gold.items():  # the teachers answer right: every question is kept
            if rows[list(gold).index(row_id)]["question"] in _prompt(request):
                return Reply(f"Answer: ({letter})")
        return Reply("Answer: (A)")

    scripted_server.set_handler("vision", teacher)
    scripted_server.set_handler("audio", teacher)
    scripted_server.set_handler("merger", plausible_handler)
    corpus = tmp_path / "corpus"
    built = build_avrt(manifest=str(out / "manifest.jsonl"), out=str(corpus),
                       config=str(write_config(tmp_path / "avrt.yaml", scripted_server.url)))
    assert built["samples_in"] == 4 and built["pending"]["samples"] == 0 and built["samples_kept"] == 4


def test_an_outage_leaves_clips_pending_exit_3_and_a_rerun_finishes(synthetic_data, scripted_server, prefect_api,
                                                                      tmp_path, monkeypatch, capsys):
    from flows.build_questions import main

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    clips = _clips(synthetic_data, tmp_path, 3)
    scripted_server.set_handler("captioner", _caption_handler)
    down = {"on": True}
    scripted_server.set_handler("writer", lambda r: Reply(status=503) if down["on"] else writer_handler(r))
    scripted_server.set_handler("solver", solver_handler)
    argv = ["--config", str(_config(tmp_path / "c.yaml", scripted_server.url)), "--clips", str(clips),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 3  # pending, never rejected
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["pending"]["samples"] == 3 and stats["clips_decided"] == 0
    assert [r.endswith("HTTP 503: scripted 503") for r in stats["pending"]["reasons"]] == [True]  # down: the run stops
    assert (tmp_path / "out/rejected/clips.jsonl").read_text() == ""
    scripted_server.reset_counts()
    down["on"] = False
    assert main(argv) == 0
    assert scripted_server.counts == {"writer": 3, "solver": 3}  # the captions were cached
    assert len((tmp_path / "out/manifest.jsonl").read_text().splitlines()) == 3

    # fewer clips would drop questions of the manifest: refused unless --replace (then no call is sent)
    scripted_server.reset_counts()
    assert main([*argv, "--limit", "2"]) == 2
    assert "manifest.jsonl holds questions of 1 clip(s) these clips do not cover" in capsys.readouterr().err
    assert main([*argv, "--limit", "2", "--replace"]) == 0 and sum(scripted_server.counts.values()) == 0
    assert len((tmp_path / "out/manifest.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_kill_minus_nine_and_resume_without_duplicates(synthetic_data, prefect_api, tmp_path):
    clips = _clips(synthetic_data, tmp_path, 9)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}  # the session's server: no start-up per command
    with ScriptedServer(latency=0.15) as server:
        server.set_handler("captioner", _caption_handler)
        server.set_handler("writer", writer_handler)
        config = _config(tmp_path / "c.yaml", server.url, blind=False)
        config.write_text(config.read_text().replace("max_in_flight: 4", "max_in_flight: 1"))
        argv = [sys.executable, "-m", "flows.build_questions", "--config", str(config), "--clips", str(clips),
                "--out", str(tmp_path / "out")]
        process = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while server.counts["writer"] < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "finished before the kill: " + process.stdout.read()[-2000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        first = Counter(server.counts)
        server.reset_counts()
        resumed = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert ids == [f"c{i}-q0" for i in range(9)]  # nothing lost, nothing twice
    assert first["writer"] + server.counts["writer"] <= 9 + 1  # at most the call in flight at the kill is sent again
    assert first["captioner"] + server.counts["captioner"] <= 9 + 1
    assert "build-questions: 9 clips decided" in resumed.stderr + resumed.stdout


def test_a_folder_of_clips_media_and_caption_rejections(synthetic_data, scripted_server, prefect_backend, tmp_path):
    """--clips as a folder (videos and an audio file): unusable media and an empty caption are dropped
    with their reasons; an audio file gives a row with its audio alone."""
    from flows.build_questions import build_questions

    def captioner(request: dict) -> Reply:  # nothing to say about the 3 s clip
        import base64
        import io

        import soundfile

        data = next(p for p in request["messages"][-1]["content"] if p.get("type") == "input_audio")["input_audio"]["data"]
        return Reply("") if soundfile.info(io.BytesIO(base64.b64decode(data))).duration < 3.5 else _caption_handler(request)

    scripted_server.set_handler("captioner", captioner)
    scripted_server.set_handler("writer", writer_handler)
    out = tmp_path / "out"
    stats = build_questions(clips=str(synthetic_data / "odd"), out=str(out),
                            config=str(_config(tmp_path / "c.yaml", scripted_server.url, blind=False)))
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected/clips.jsonl").read_text().splitlines())}
    assert (rejected["no_audio"]["stage"], rejected["no_audio"]["reason"]) == ("media", "no audio track")
    assert rejected["corrupt"]["stage"] == "media"
    assert stats["clip_reasons"]["audio_captioner"] == {"empty caption": 1}
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == stats["questions_kept"] == 7 - 2 - 1  # 7 clips: 2 unusable, 1 empty caption
    audio_only = [r for r in rows if r["clip_id"] == "no_video"]
    assert all("video" not in r and r["audio"].endswith("no_video.m4a") for r in audio_only)
