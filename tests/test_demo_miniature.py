"""`make demo` in miniature: the student must need both modalities.

What ``make demo`` runs, with the demo's own settings: the AV task (``demo.task``, 320 clips of
3 s), the trained vision and audio teachers and LLM merger (``demo.models``) behind a real
``transformers serve`` (one server here, two in the demo), build-avrt with the demo's build config
(``filter: both``, ``merger_kind: llm``), SFT then GRPO of a fresh tiny student with the demo's train
config (``demo.student.run_student``, no overrides), and evaluation on the test split in the av, a
and v settings. It fails when audio or frames stop reaching the student's training: on this task a
student that gets only one modality can be right at most about half the time (the other property is
a coin flip), so the trained student's av accuracy must clear 0.7 and beat both ablations.

The teachers sample (temperature 1, top_p 0.8, as in the demo), so which samples are kept varies between runs;
the assertions hold for any plausible draw (counts and thresholds, no exact figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo.summary import learned_both

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 320  # scripts/demo.sh's DEMO_CLIPS; the clips' length is demo.task's default, as there


def _build(manifest: Path, models: Path, server: str, student_base: Path, out: Path, cache: Path) -> dict:
    """build-avrt with the demo's build config (flows report to the session's ``prefect_api``)."""
    from flows.build_avrt import build_avrt

    overrides = {f"{role}.{key}": value for role, name in (("vision_teacher", "vision"), ("audio_teacher", "audio"),
                                                           ("merger", "merger"))
                 for key, value in (("model", str(models / name)), ("base_url", server))}
    overrides["stats_tokenizer"] = str(student_base)
    overrides["cache_dir"] = str(cache)  # where the teachers' training extracted the clips, as in the demo
    return build_avrt(manifest=str(manifest), out=str(out), config=str(ROOT / "configs/build/demo.yaml"),
                      overrides=overrides)


def _longest_trace_tokens(corpus: Path, tokenizer_path: Path) -> int:
    import pandas as pd
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    merged = pd.read_parquet(corpus / "corpus" / "train.parquet")["merged"]
    return max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in merged)


@pytest.mark.timeout(1500)  # about 5 min alone on 2 cores; twice that under load
def test_student_trained_on_the_miniature_needs_both_modalities(transformers_server, tiny_models, prefect_api, tmp_path):
    from demo.models import DemoModelSettings, train_models
    from demo.student import TRAIN_CONFIG, run_student
    from demo.task import write_task
    from training.train_config import load_config

    task = write_task(tmp_path / "av", n=CLIPS)
    models = train_models(task["train"], tmp_path / "models", DemoModelSettings(), media_cache=tmp_path / "cache")
    corpus = tmp_path / "corpus"
    stats = _build(task["train"], models, transformers_server, tiny_models["omni"], corpus, tmp_path / "cache")
    # the decoding budget (GRPO's, and the evaluation's) holds a whole trace: at 48 tokens every
    # 50-52-token trace was cut, most often just before the answer letter
    budget = load_config(TRAIN_CONFIG).grpo.max_completion_length
    assert _longest_trace_tokens(corpus, tiny_models["omni"]) < budget
    figures = run_student(corpus, task["test"], tiny_models["omni"], tmp_path)
    print(json.dumps(figures))
    assert (tmp_path / "student" / "sft" / "final").is_dir() and (tmp_path / "student" / "grpo" / "final").is_dir()

    # every stage did its real job: teachers right sometimes, the filter kept some and dropped some,
    # every kept sample has a merged trace that passed validation
    assert all(0 < figures["teachers"][role]["accuracy"] < 1 for role in ("vision", "audio"))
    assert 0 < stats["samples_kept"] < stats["samples_in"]
    assert stats["cache"]["media"]["misses"] == 0  # the build read the clips the teachers learned from
    assert figures["merger"]["attempts"] >= stats["samples_kept"]
    # the student learned to use both modalities
    after = figures["student"]["after"]
    assert learned_both(after), figures["student"]
    assert after["av"] > figures["student"]["before"]["av"], figures["student"]
