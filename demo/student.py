"""The demo's student: train a fresh tiny student on the demo corpus (SFT then GRPO),
evaluate it untrained (in a second process, while it trains) and trained on the test split (av, a,
v), and print the figures.

    python -m demo.student --corpus outputs/demo/corpus --test outputs/demo/av-n320/manifest_test.jsonl \\
        --model outputs/tiny/omni --out outputs/demo [key=value ...]

Writes ``OUT/student`` (``training.sft_then_grpo`` with ``configs/train/demo.yaml``; ``key=value``
overrides its dotted keys, e.g. ``grpo.max_steps=2``), ``OUT/eval-base`` and ``OUT/eval``
(``evaluation.evaluate`` with the ``manifest`` benchmark) and ``OUT/summary.json`` (``demo.summary``).
Each of the three folders is kept while its inputs are unchanged (the student: the corpus, the base
model and the resolved config; an evaluation: the model it evaluates, the test manifest and the
decoding budget) and redone from scratch otherwise, so a second ``make demo`` trains and evaluates
nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = ROOT / "configs/train/demo.yaml"
KEY_FILE = ".demo-inputs"  # in each reused folder: the digest of what it was made from


def digest(*parts: Any) -> str:
    """sha256 of JSON-able parts, where a ``Path`` stands for its bytes (a folder: every file in it)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = (sorted(p for p in part.rglob("*") if p.is_file() and p.name != KEY_FILE) if part.is_dir()
                     else [part] if part.exists() else [])
            for f in files:
                h.update(str(f.relative_to(part) if part.is_dir() else f.name).encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fresh_unless_same(folder: Path, key: str) -> bool:
    """True when ``folder`` was made from inputs with digest ``key`` (and finished); otherwise empty
    it so that it is redone from scratch."""
    stamp = folder / KEY_FILE
    if stamp.is_file() and stamp.read_text() == key:
        return True
    shutil.rmtree(folder, ignore_errors=True)
    return False


def train(corpus: Path, model: Path, out: Path, overrides: list[str]) -> Path:
    """SFT then GRPO (the config's stages) of a fresh student from ``model`` on ``corpus``; returns the
    last stage's final model."""
    from training.sft_then_grpo import run
    from training.train_config import load_config

    config = load_config(TRAIN_CONFIG, [f"model={model}", f"corpus={corpus}", f"output_dir={out}", *overrides])
    key = digest(config.model_dump(mode="json", exclude={"output_dir"}), corpus / "corpus", model)
    final = out / config.stages[-1] / "final"
    if fresh_unless_same(out, key):
        print(f"reusing the student trained on the same corpus and config: {final}")
        return final
    run(config)
    (out / KEY_FILE).write_text(key)
    return final


def evaluate(model: Path, test: Path, corpus: Path, out: Path, max_new_tokens: int) -> dict[str, Any]:
    """The student's report on the test split in the av, a and v settings (difficulty subsets from the corpus)."""
    from evaluation.evaluate import run

    key = digest(model, test, corpus / "corpus", corpus / "rejected", max_new_tokens)
    if fresh_unless_same(out, key):
        print(f"reusing the evaluation of the same model: {out}")
        return json.loads((out / "report.json").read_text())
    report = run(["--model", str(model), "--benchmark", "manifest", "--data", str(test), "--modalities", "av,a,v",
                  "--max-new-tokens", str(max_new_tokens), "--difficulty-from", str(corpus), "--out", str(out), "--quiet"])
    (out / KEY_FILE).write_text(key)
    return report


def run_student(corpus: Path, test: Path, model: Path, out: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Train, evaluate before and after, and return the demo's figures (``demo.summary.summary``)."""
    from demo.summary import summary
    from training.train_config import load_config

    # GRPO's completion budget is the evaluation's too: a whole merged trace and its answer fit
    budget = load_config(TRAIN_CONFIG, list(overrides)).grpo.max_completion_length
    # the untrained student is evaluated in a second process while the student trains, each on half the cores
    half = max(1, (os.cpu_count() or 1) // 2)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        base = pool.submit(_timed, evaluate, model, test, corpus, out / "eval-base", budget, threads=half)
        trained_seconds, final = _timed(train, corpus, model, out / "student", list(overrides), threads=half)
        base_seconds, base_report = base.result()
    eval_seconds, report = _timed(evaluate, final, test, corpus, out / "eval", budget)
    figures = summary(corpus, base_report, report)
    figures["seconds"] = {"train": trained_seconds, "eval-base": base_seconds, "eval": eval_seconds}
    return figures


def _timed(function, *args, threads: int | None = None) -> tuple[float, Any]:
    """``function(*args)`` and the seconds it took, with torch on ``threads`` threads meanwhile."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    started = time.monotonic()
    try:
        result = function(*args)
    finally:
        torch.set_num_threads(before)
    return round(time.monotonic() - started, 1), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.student", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the demo's build-avrt output folder")
    parser.add_argument("--test", type=Path, required=True, help="the task's manifest_test.jsonl")
    parser.add_argument("--model", type=Path, required=True, help="the fresh tiny student (training.tiny_models)")
    parser.add_argument("--out", type=Path, required=True, help="where student/, eval-base/, eval/ and summary.json go")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="train config overrides, e.g. grpo.max_steps=2")
    args = parser.parse_args(argv)
    from demo.summary import render

    figures = run_student(args.corpus, args.test, args.model, args.out, args.overrides)
    (args.out / "summary.json").write_text(json.dumps(figures, indent=1))
    seconds = figures["seconds"]
    print(f"\nstudent: trained in {seconds['train']:.0f} s, evaluated in {seconds['eval']:.0f} s (the untrained one "
          f"in {seconds['eval-base']:.0f} s, meanwhile)\n")
    print(render(figures))


if __name__ == "__main__":
    main()
