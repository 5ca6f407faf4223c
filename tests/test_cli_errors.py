"""A mistake a user can make in a command (an override, a path, a model folder, a corpus, a setting this
machine cannot run, another task's data) ends in one line naming what to change and exit status 2, before
any model loads, with no traceback (issue 35). Each runs the program's ``main`` in this process, except
the torchrun line, which is a subprocess as the user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.documented import documented_commands

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


def _refused(main, argv: list[str], capsys) -> str:
    """What ``main(argv)`` printed on stderr when it stopped with status 2 (and no traceback)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert "Traceback" not in err
    return err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_an_override_typo_names_the_key_and_the_closest_one(capsys, monkeypatch):
    from evaluation.evaluate import main as evaluate
    from flows.build_avrt import main as build
    from training.sft_then_grpo import main as train

    line = _one_line(_refused(train, ["--config", TINY, "sft.max_step=2"], capsys))
    assert line == "error: sft.max_step: unknown key (did you mean sft.max_steps?)"
    line = _one_line(_refused(evaluate, ["--benchmark", "mmau", "--data", "x", "--model", "m",
                                         "--set", "decoding.max_new_token=8"], capsys))
    assert line == "error: decoding.max_new_token: unknown key (did you mean decoding.max_new_tokens?)"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # refused before Prefect is contacted
    assert build(["--manifest", "m.jsonl", "--out", "o", "--config", str(ROOT / "configs/build/demo.yaml"),
                  "--set", "merger.temprature=0.3"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == "build-avrt: refused: merger.temprature: unknown key (did you mean merger.temperature?)"


def test_a_model_folder_that_does_not_exist_is_refused_without_asking_the_hub(corpus, tmp_path, capsys, monkeypatch):
    from evaluation.evaluate import main as evaluate
    from training.sft_then_grpo import main as train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "tiny").mkdir(parents=True)
    expected = "error: --model outputs/tiny/nope: no such folder"
    line = _one_line(_refused(train, ["--config", TINY, "--model", "outputs/tiny/nope", "--corpus", str(corpus)], capsys))
    assert line.startswith(expected) and "huggingface" not in line
    line = _one_line(_refused(evaluate, ["--model", "outputs/tiny/nope", "--benchmark", "manifest", "--data", "m.jsonl"],
                              capsys))
    assert line.startswith(expected)
    line = _one_line(_refused(train, ["--config", TINY, "--model", "outputs/student", "--corpus", str(corpus)], capsys))
    assert line.startswith("error: --model outputs/student: no such folder"), "org/name-shaped, in a folder that exists"


def test_a_corpus_without_kept_rows_is_one_line(tiny_models, tmp_path, capsys):
    from training.sft_then_grpo import main as train

    (tmp_path / "run" / "corpus").mkdir(parents=True)  # a build-avrt --out whose run kept nothing
    argv = ["--config", TINY, "--model", str(tiny_models["omni"]), "--output-dir", str(tmp_path / "train")]
    line = _one_line(_refused(train, [*argv, "--data", str(tmp_path / "run")], capsys))
    assert line == (f"error: --data {tmp_path / 'run'}: no kept rows under {tmp_path / 'run' / 'corpus'} "
                    "(give the --out folder of a build-avrt run that kept rows)")
    line = _one_line(_refused(train, [*argv, "--corpus", str(tmp_path / "nowhere")], capsys))  # the old name
    assert "no such file or folder" in line
    assert not (tmp_path / "train").exists(), "nothing written"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the check is for a machine without a GPU")
def test_a_weight_sync_that_needs_a_gpu_is_refused_before_training(tiny_models, corpus, tmp_path, capsys):
    from training.sft_then_grpo import main as train

    line = _one_line(_refused(train, [
        "--config", TINY, "--model", str(tiny_models["omni"]), "--corpus", str(corpus), "--output-dir",
        str(tmp_path / "train"), "grpo.rollout=vllm", "grpo.rollout_urls=[http://127.0.0.1:9/v1]",
        "grpo.rollout_weight_sync=nccl"], capsys))
    assert line.startswith("error: grpo.rollout_weight_sync=nccl needs the policy on a GPU")
    assert "grpo.rollout_weight_sync=files" in line and not (tmp_path / "train").exists()


def test_demo_student_refuses_another_tasks_corpus_before_training(tiny_models, corpus, synthetic_data, tmp_path, capsys):
    from demo.student import main

    line = _one_line(_refused(main, ["--corpus", str(corpus), "--test", str(synthetic_data / "manifest.jsonl"),
                                     "--model", str(tiny_models["omni"]), "--out", str(tmp_path / "demo")], capsys))
    assert line.startswith("error: --corpus: ") and "is not a question of the demo task" in line
    assert not (tmp_path / "demo").exists(), "nothing trained or evaluated"


@pytest.mark.slow
def test_the_documented_torchrun_line_reads_the_demo_outputs(tiny_models, tmp_path):
    """docs/training.md's torchrun line, as written, where `make demo` would have written its tiny student but
    its build kept no row: it looks in the demo's corpus folder, and each rank stops with status 2 before
    loading anything, rank 0 alone saying why in one line. torchrun's own failure report follows (its
    ChildFailedError: the one traceback, not ours)."""
    line = next(c for _, c in documented_commands() if c.startswith("torchrun "))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "outputs" / "tiny").mkdir(parents=True)
    (tmp_path / "outputs" / "tiny" / "omni").symlink_to(tiny_models["omni"])
    (tmp_path / "outputs" / "demo" / "corpus" / "corpus").mkdir(parents=True)
    argv = [sys.executable, "-m", "torch.distributed.run", "--master_port", str(free_port()), *line.split()[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    ours = "error: --data outputs/demo/corpus: no kept rows under outputs/demo/corpus/corpus"
    assert output.count(ours) == 1, output[-3000:]
    assert "exitcode  : 2" in output, output[-3000:]  # the rank torchrun saw stop first (it may stop the other)
    assert output.count("Traceback") == 1 and "ChildFailedError" in output, output[-3000:]
