"""demo.student reuses a part exactly while its inputs are unchanged (the training and evaluation
themselves run in tests/test_demo_miniature.py)."""

import json
import sys
from types import SimpleNamespace

import pytest

from demo import student


def test_digest_follows_the_bytes_of_files_and_folders(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights").write_bytes(b"\0" * 8)
    first = student.digest(folder, 64)
    assert student.digest(folder, 64) == first
    assert student.digest(folder, 48) != first
    (folder / student.KEY_FILE).write_text("a stamp is not an input")
    assert student.digest(folder, 64) == first
    (folder / "weights").write_bytes(b"\1" + b"\0" * 7)
    assert student.digest(folder, 64) != first
    assert student.digest(tmp_path / "missing") == student.digest(tmp_path / "also-missing")


def _test_split(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "corpus").mkdir(parents=True)
    (corpus / "corpus" / "train.parquet").write_bytes(b"rows")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_bytes(b"w")
    test = tmp_path / "manifest_test.jsonl"
    test.write_text('{"id": "av00001"}\n')
    return corpus, model, test


def test_an_evaluation_is_reused_only_while_model_test_split_and_corpus_are_unchanged(tmp_path, monkeypatch):
    corpus, model, test = _test_split(tmp_path)
    out = tmp_path / "eval"
    calls = []

    def fake_run(argv):  # stands in for evaluation.evaluate.run: writes a report
        calls.append(argv)
        out.mkdir(parents=True, exist_ok=True)
        report = {"settings": {"av": {"accuracy": 0.5 + len(calls)}}}
        (out / "report.json").write_text(json.dumps(report))
        return report

    monkeypatch.setitem(sys.modules, "evaluation.evaluate", SimpleNamespace(run=fake_run))
    first = student.evaluated(model, test, corpus, out, 64, threads=1)
    assert student.evaluated(model, test, corpus, out, 64, threads=1) == first and len(calls) == 1
    assert "--batch-size" in calls[0] and calls[0][calls[0].index("--max-new-tokens") + 1] == "64"

    (model / "weights").write_bytes(b"retrained")
    (out / "stale-file").write_text("from the old model")
    again = student.evaluated(model, test, corpus, out, 64, threads=1)
    assert len(calls) == 2 and again != first and not (out / "stale-file").exists()  # redone from scratch
    (corpus / "corpus" / "train.parquet").write_bytes(b"other rows")
    student.evaluated(model, test, corpus, out, 64, threads=1)
    assert len(calls) == 3


@pytest.mark.parametrize("change", ["config", "corpus"])
def test_a_student_is_retrained_when_its_config_or_corpus_changes(tmp_path, monkeypatch, change):
    corpus, model, _ = _test_split(tmp_path)
    runs = []
    # stands in for training.sft_then_grpo (not imported: torch and TRL are not needed here)
    monkeypatch.setitem(sys.modules, "training.sft_then_grpo", SimpleNamespace(run=runs.append))
    config = student.student_config(corpus, model, tmp_path / "student")
    final = student.trained(config, threads=1)
    assert final == tmp_path / "student" / "grpo" / "final"
    student.trained(student.student_config(corpus, model, tmp_path / "student"), threads=1)
    assert len(runs) == 1
    if change == "config":
        config = student.student_config(corpus, model, tmp_path / "student", ["sft.max_steps=3"])
    else:
        (corpus / "corpus" / "train.parquet").write_bytes(b"other rows")
    student.trained(config, threads=1)
    assert len(runs) == 2


def test_the_summary_of_a_concat_corpus_counts_no_merger_calls():
    """A corpus merged with ``concat`` (no merger model): one merge per sample, never a negative count."""
    from demo.summary import merger_tally, render

    kept = [{"status": "kept", "stage": "kept", "merger_kind": "concat", "merger_attempts": 0}] * 12
    tally = merger_tally([*kept, {"status": "rejected", "stage": "filter"}], attempts_per_sample=3, kind="concat")
    assert tally == {"samples": 12, "attempts": 12, "validation_failures": 0, "samples_dropped": 0}
    result = {"teachers": {}, "filter": "all", "kept": 12, "samples_in": 13, "kept_answers": {"A": 12},
              "merger": {**tally, "kind": "concat"},
              "student": {"before": {"av": 0.0, "a": 0.0, "v": 0.0}, "after": {"av": 0.0, "a": 0.0, "v": 0.0}}}
    assert "merger: concat (no model calls) for 12 samples, 0 failed validation, 0 samples dropped" in render(result)
