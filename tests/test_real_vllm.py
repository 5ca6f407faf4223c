"""Real vLLM from the project's own environment (``make vllm-env``), on CPU, with tiny random models.

One ``serving.launch`` run serves the exported tiny Omni (both teacher roles, and the student) and the
tiny text merger for the whole module (``configs/teachers/tiny_vllm.yaml``); the tests send the
project's real requests through them: docs/serving.md's CPU smoke path as written (``flows.check``, an
8-sample build-avrt run, training, evaluation), and the evaluator's ``--backend openai`` against
``--backend hf`` on the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from serving.vllm_server import project_python
from tests.conftest import free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(project_python() is None, reason="no .venv-vllm: run `make vllm-env`")]

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs/teachers/tiny_vllm.yaml"
READY_TIMEOUT_S = 420  # two servers starting together on 2 loaded cores


@pytest.fixture(scope="module")
def vllm_models(tmp_path_factory) -> dict[str, Path]:
    """The vllm-tiny student/teacher exported as a full Omni checkpoint, and the tiny merger."""
    from student.export import export_student
    from training.tiny_models import build_all

    out = tmp_path_factory.mktemp("vllm-tiny")
    models = build_all(out, seed=0, preset="vllm-tiny")
    return {**models, "export": export_student(models["omni"], out / "omni-export")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Eight synthetic clips (manifest.jsonl)."""
    from media.synthetic import write_dataset

    out = tmp_path_factory.mktemp("clips")
    write_dataset(out, n=8, seed=0)
    return out


@pytest.fixture(scope="module")
def ten_second_clips(tmp_path_factory) -> Path:
    """Eight synthetic clips of 10 s (manifest.jsonl): vLLM re-samples a video at 2 fps, so shorter
    clips would reach it with fewer than 8 frames in the aligned layout."""
    from media.synthetic import write_dataset

    out = tmp_path_factory.mktemp("clips-10s")
    write_dataset(out, n=8, seed=1, seconds=10.0)
    return out


@pytest.fixture(scope="module")
def launched(vllm_models, tmp_path_factory):
    """``python -m serving.launch --cpu`` serving the tiny models; yields the config it wrote and its output."""
    work = tmp_path_factory.mktemp("launch")
    written = work / "build.yaml"
    export, text = vllm_models["export"], vllm_models["text"]
    argv = [sys.executable, "-m", "serving.launch", "--config", str(TINY_CONFIG), "--cpu",
            "--weights", f"vision={export},audio={export},merger={text}",
            "--ports", f"vision={free_port()},merger={free_port()}", "--write-config", str(written),
            "--log-dir", str(work / "logs"), "--ready-timeout", str(READY_TIMEOUT_S)]
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("# or run build-avrt"):
                break
        assert written.exists(), "serving.launch did not get ready:\n" + "".join(lines)
        print(f"serving.launch ready in {time.monotonic() - started:.0f}s")
        yield {"config": written, "output": "".join(lines), "logs": work / "logs"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(lines)


def test_launch_starts_the_tiny_omni_teacher_and_merger_on_cpu_vllm(launched):
    import httpx

    config = yaml.safe_load(launched["config"].read_text())
    urls = {role: config[role]["base_url"] for role in ("vision_teacher", "audio_teacher", "merger")}
    assert urls["vision_teacher"] == urls["audio_teacher"] != urls["merger"]  # one Omni server for both roles
    served = {role: [m["id"] for m in httpx.get(url + "/models", timeout=10).json()["data"]] for role, url in urls.items()}
    assert served == {"vision_teacher": ["tiny-omni"], "audio_teacher": ["tiny-omni"], "merger": ["tiny-text"]}
    output = launched["output"]
    assert "on CPU" in output and "ready   vision+audio-0: tiny-omni" in output and "ready   merger-0: tiny-text" in output
    assert f"audio check: vLLM at {project_python()} decodes input_audio" in output  # the real install's loader
    log = (launched["logs"] / "vision+audio-0.log").read_text()
    assert "Qwen2_5OmniForConditionalGeneration" in log  # vLLM's own Qwen2.5-Omni implementation serves the export


# docs/serving.md's set-up lines for the CPU path, done here by this module's fixtures
SETUP = {
    "make vllm-env": "the environment this module needs (skipped without it)",
    ".venv/bin/python -m training.tiny_models --preset vllm-tiny --out outputs/tiny-vllm": "vllm_models",
    ".venv/bin/python -m evaluation.export_student --model outputs/tiny-vllm/omni --out outputs/tiny-vllm/omni-export":
        "vllm_models",
    ".venv/bin/python -m serving.launch --config configs/teachers/tiny_vllm.yaml --cpu --write-config "
    "outputs/tiny-vllm/build.yaml": "launched",
    ".venv/bin/python -m media.synthetic --out outputs/tiny-vllm/clips --n 8": "clips",
}


def _cpu_section_commands() -> list[str]:
    from tests.documented import command_lines

    text = (REPO / "docs" / "serving.md").read_text()
    section = text[text.index("## On CPU"):]
    return command_lines(section[: section.index("\n## ", 1)])


def test_the_documented_cpu_smoke_path_runs_as_written(launched, vllm_models, clips, prefect_api, tmp_path,
                                                        monkeypatch, capsys):
    """docs/serving.md's CPU path, line by line as written: the tiny teachers and merger (the fixtures run
    the set-up lines), flows.check, a corpus with rows (concat merger), one SFT and one GRPO step, and an
    evaluation. The project's real requests go through vLLM: 8 image_url frames and an input_audio WAV per
    sample, and check's merger request."""
    from tests.documented import run_documented

    lines = _cpu_section_commands()
    assert [line for line in lines if line in SETUP] == list(SETUP), "the set-up lines the fixtures stand for"
    tiny = tmp_path / "outputs" / "tiny-vllm"
    tiny.mkdir(parents=True)
    for name, target in (("omni", vllm_models["omni"]), ("text", vllm_models["text"]),
                         ("omni-export", vllm_models["export"]), ("build.yaml", launched["config"]), ("clips", clips)):
        (tiny / name).symlink_to(target)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    printed = {}
    for line in (line for line in lines if line not in SETUP):
        code = run_documented(line)
        printed[line.split()[2]] = output = capsys.readouterr()
        assert code == 0, f"{line}\n{output.out[-2000:]}\n{output.err[-2000:]}"
        assert "Traceback" not in output.err, line

    checked = [line.split() for line in printed["flows.check"].out.splitlines() if "/v1" in line]
    assert [line[1] for line in checked] == ["vision", "audio", "merger"]
    assert all(line[0] in ("ok", "WARN") for line in checked)  # random models: an answer, maybe no option
    stats = json.loads((tiny / "corpus" / "stats.json").read_text())
    assert stats["samples_in"] == 8 and stats["pending"]["samples"] == 0 and not stats["stopped"]
    assert stats["calls_sent"] == {"vision": 8, "audio": 8}  # 8 images + a WAV each; concat calls no merger
    kept = pd.read_parquet(tiny / "corpus" / "corpus" / "train.parquet")
    assert len(kept) == 8 and all(isinstance(t, str) for t in [*kept["vision_raw"], *kept["audio_raw"]])
    assert (tiny / "train" / "grpo" / "final" / "model.safetensors").exists()
    report = json.loads((tiny / "eval" / "report.json").read_text())
    assert report["n_items"] == 8 and report["settings"]["av"]["generation_errors"] == 0


def _parent(pid: int) -> int:
    """The parent of ``pid`` (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _vllm_processes() -> set[int]:
    """PIDs of the vLLM API servers this test process started and that still run (this module's own
    servers among them), from /proc: those of other test workers are not its business."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"vllm.entrypoints.openai.api_server" not in cmdline.read_bytes():
                continue
        except OSError:  # gone meanwhile
            continue
        pid = ancestor = int(cmdline.parent.name)
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = _parent(ancestor)
        if ancestor == os.getpid():
            found.add(pid)
    return found


def test_student_served_by_vllm_answers_as_the_hf_backend(launched, vllm_models, ten_second_clips, tmp_path):
    """Same exported student, same 8 clips of 10 s, greedy, fp32 on both sides (the profile's ``--dtype
    float32``): vLLM (``--backend openai``) writes what ``--backend hf`` writes, in the default
    ``aligned`` layout (one lossless clip with its sound, ``student.served``) in the av, a and v
    settings, and in the ``separate`` layout (av, the first 4 clips). vLLM gets the hf backend's frame size and fps
    (``--mm-processor-kwargs``). ``--backend vllm`` (a server of its own from the same export) writes the
    same in the aligned layout (av), and leaves no vLLM process when it ends. One difference is left and not compared: byte-level tokens that end
    an answer without completing a UTF-8 character are U+FFFD in transformers' decoding and held
    back by vLLM's detokenizer.
    """
    from evaluation.evaluate import PREDICTIONS, read_predictions, run

    config = yaml.safe_load(launched["config"].read_text())
    for layout, modalities in (("aligned", "av,a,v"), ("separate", "av")):
        common = ["--benchmark", "manifest", "--data", str(ten_second_clips / "manifest.jsonl"), "--max-new-tokens",
                  "12", "--quiet", "--modalities", modalities, "--model", str(vllm_models["export"])]
        common += ["--layout", layout, "--limit", "4"] if layout != "aligned" else []  # aligned: the default
        run([*common, "--device", "cpu", "--dtype", "float32", "--out", str(tmp_path / layout / "hf")])
        report = run([*common, "--backend", "openai", "--base-url", config["vision_teacher"]["base_url"],
                      "--served-model", "tiny-omni", "--mm-processor-kwargs", "--max-in-flight", "4",
                      "--out", str(tmp_path / layout / "openai")])
        assert report["backend"]["layout"] == layout
        predictions = {}
        for name in ("hf", "openai"):
            rows = read_predictions(tmp_path / layout / name / PREDICTIONS)
            assert all(r["error"] is None for r in rows), rows
            predictions[name] = {(r["id"], r["modality"]): (r["output"].rstrip("\ufffd"), r["letter"]) for r in rows}
        assert len(predictions["hf"]) == (8 if layout == "aligned" else 4) * len(modalities.split(","))
        av = {text for (_, setting), (text, _) in predictions["hf"].items() if setting == "av"}
        assert layout != "aligned" or len(av) >= 4, "distinct answers: the inputs matter"
        assert predictions["openai"] == predictions["hf"], layout
        if layout == "aligned":  # --backend vllm: its own server, started and stopped by the command
            before = _vllm_processes()
            report = run([*common, "--modalities", "av", "--backend", "vllm", "--dtype", "float32", "--out",
                          str(tmp_path / "vllm")])  # av: the layout under test; a and v were compared above
            assert report["backend"]["kind"] == "vllm" and report["throughput"]["items_per_s"] > 0
            rows = read_predictions(tmp_path / "vllm" / PREDICTIONS)
            assert all(r["error"] is None for r in rows) and len(rows) == 8, rows
            assert {(r["id"], r["modality"]): (r["output"].rstrip("\ufffd"), r["letter"]) for r in rows} == \
                {key: value for key, value in predictions["hf"].items() if key[1] == "av"}
            assert _vllm_processes() == before, "the command left a vLLM process behind"


def test_build_questions_through_real_vllm_then_build_avrt_reads_the_manifest(launched, vllm_models, clips, prefect_api,
                                                                             tmp_path):
    """build-questions on real vLLM: the tiny Omni captions 3 clips' audio, the tiny text model writes two
    questions per clip through ``response_format`` (vLLM's guided decoding makes a random model's answer the
    schema's JSON); the manifest it writes then goes through build-avrt against scripted teachers.

    The random writer samples (seeded) with its quote tokens favoured, so that its strings end within a
    few words: unbiased, they run to the schema's length cap and fail the word bounds (the checks at work)."""
    from transformers import AutoTokenizer

    from corpus.manifest import read_manifest
    from flows.build_avrt import build_avrt
    from flows.build_questions import build_questions
    from tests.pipeline_helpers import write_config
    from tests.scripted_server import ScriptedServer, plausible_handler

    served = yaml.safe_load(launched["config"].read_text())
    tokenizer = AutoTokenizer.from_pretrained(vllm_models["text"])
    quotes = {str(i): 3.0 for i in range(len(tokenizer)) if '"' in tokenizer.decode([i])}
    common = {"timeout_s": 120, "max_in_flight": 2}
    config = tmp_path / "questions.yaml"
    config.write_text(yaml.safe_dump({
        "audio_captioner": {"model": "tiny-omni", "base_url": served["audio_teacher"]["base_url"], "max_tokens": 12,
                            "temperature": 0.0, **common},
        "question_writer": {"model": "tiny-text", "base_url": served["merger"]["base_url"], "max_tokens": 400,
                            "temperature": 1.0, "extra_body": {"seed": 0, "logit_bias": quotes}, **common},
        "questions_per_clip": 2, "question_words": [1, 40], "media": {"max_side": 160}}))
    out = tmp_path / "questions"
    stats = build_questions(clips=str(clips / "manifest.jsonl"), out=str(out), config=str(config), limit=3)
    assert stats["pending"]["samples"] == 0 and not stats["stopped"]
    assert stats["calls_sent"] == {"audio_captioner": 3, "question_writer": 3}
    assert "question_writer" not in stats["clip_reasons"], stats["clip_reasons"]  # every answer parsed as the schema
    assert stats["questions_kept"] >= 1, stats["question_reasons"]
    rows = read_manifest(out / "manifest.jsonl")
    assert rows.invalid == [] and len(rows.samples) == stats["questions_kept"]

    with ScriptedServer(plausible_handler) as teachers:  # build-avrt reads the manifest as it is
        built = build_avrt(manifest=str(out / "manifest.jsonl"), out=str(tmp_path / "corpus"),
                           config=str(write_config(tmp_path / "avrt.yaml", teachers.url)), overrides={"filter": "all"})
    assert built["samples_in"] == len(rows.samples) and built["pending"]["samples"] == 0
