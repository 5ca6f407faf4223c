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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from configs import UserError, user_errors

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


def finished(folder: Path, key: str) -> bool:
    """Whether ``folder`` was finished from inputs with digest ``key``."""
    stamp = folder / KEY_FILE
    return stamp.is_file() and stamp.read_text() == key


def student_config(corpus: Path, model: Path, out: Path, overrides: list[str] = ()):
    """The demo's train config (``configs/train/demo.yaml``) for this corpus, base model and folder (an
    override that does not validate is a ``UserError``)."""
    from training.train_config import read_config

    return read_config(TRAIN_CONFIG, [f"model={model}", f"corpus={corpus}", f"output_dir={out}", *overrides])


def check_task(corpus: Path, test: Path) -> None:
    """Refuse (``UserError``), before anything trains, a corpus or test split of another task: the figures
    read each clip's colour and pitch from the demo task's options."""
    from corpus.manifest import load_manifest
    from corpus.store import read_rows
    from demo.summary import other_task_row

    for flag, rows in (("--corpus", read_rows(corpus)), ("--test", [s.to_dict() for s in load_manifest(test)])):
        if (row := other_task_row(rows)) is not None:
            raise UserError(f"{flag}: {row['id']!r} is not a question of the demo task (options "
                            f"{list(row['choices'])}); demo.student takes the demo's corpus and test split "
                            "(python -m demo.task, then build-avrt)")


def student_key(config) -> str:
    return digest(config.model_dump(mode="json", exclude={"output_dir"}), Path(config.corpus) / "corpus",
                  Path(config.model))


def trained(config, threads: int) -> Path:
    """The final model of a fresh student trained with ``config`` (its stages), reused while the
    inputs are unchanged."""
    out, key = Path(config.output_dir), student_key(config)
    final = out / config.stages[-1] / "final"
    if finished(out, key):
        return final
    from training.sft_then_grpo import run

    shutil.rmtree(out, ignore_errors=True)
    with _torch_threads(threads):
        run(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / KEY_FILE).write_text(key)
    return final


def evaluation_key(model: Path, test: Path, corpus: Path, max_new_tokens: int) -> str:
    return digest(model, test, corpus / "corpus", corpus / "rejected", max_new_tokens)


def evaluated(model: Path, test: Path, corpus: Path, out: Path, max_new_tokens: int, threads: int) -> dict[str, Any]:
    """The model's report on the test split in the av, a and v settings (difficulty subsets from the
    corpus), reused while the inputs are unchanged."""
    key = evaluation_key(model, test, corpus, max_new_tokens)
    if finished(out, key):
        return json.loads((out / "report.json").read_text())
    from evaluation.evaluate import run

    shutil.rmtree(out, ignore_errors=True)
    with _torch_threads(threads):
        # 32 questions per generate call: the same answers as the default 4, for a third of the CPU
        report = run(["--model", str(model), "--benchmark", "manifest", "--data", str(test), "--modalities", "av,a,v",
                      "--batch-size", "32", "--max-new-tokens", str(max_new_tokens), "--difficulty-from", str(corpus),
                      "--out", str(out), "--quiet"])
    out.mkdir(parents=True, exist_ok=True)
    (out / KEY_FILE).write_text(key)
    return report


def run_student(corpus: Path, test: Path, model: Path, out: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Train, evaluate before and after (each reused while its inputs are unchanged), and return the
    demo's figures (``demo.summary.summary``) with the seconds each part that ran took (``seconds``)."""
    from demo.summary import summary
    from training.sft_then_grpo import check_inputs

    config = student_config(corpus, model, out / "student", overrides)
    check_inputs(config)  # the base model and the corpus, as the trainer checks them
    check_task(corpus, test)
    budget = config.grpo.max_completion_length  # GRPO's completion budget: a whole trace and its answer fit
    # The untrained student is evaluated in a second process while the student trains. Torch gets half
    # the cores in each process, and in the last evaluation too: tiny models gain little from a second
    # thread, and threads that outnumber free cores stall each other (tenfold, on a shared machine).
    half = max(1, (os.cpu_count() or 1) // 2)
    seconds: dict[str, float] = {}  # of the parts that ran (not reused)

    def timed(part: str, reused: bool, function, *args):
        started = time.monotonic()
        result = function(*args)
        if not reused:
            seconds[part] = round(time.monotonic() - started, 1)
        return result

    base_args = (model, test, corpus, out / "eval-base", budget, half)
    train_reused = finished(out / "student", student_key(config))
    if finished(out / "eval-base", evaluation_key(model, test, corpus, budget)):
        base_report = evaluated(*base_args)
        final = timed("train", train_reused, trained, config, half)
    else:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            base = pool.submit(_seconds_and_result, evaluated, *base_args)
            final = timed("train", train_reused, trained, config, half)
            seconds["eval-base"], base_report = base.result()
    eval_reused = finished(out / "eval", evaluation_key(final, test, corpus, budget))
    report = timed("eval", eval_reused, evaluated, final, test, corpus, out / "eval", budget, half)
    return {**summary(corpus, base_report, report), "seconds": seconds}


def _seconds_and_result(function, *args) -> tuple[float, Any]:
    started = time.monotonic()
    result = function(*args)
    return round(time.monotonic() - started, 1), result


@contextmanager
def _torch_threads(threads: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

    with user_errors():
        figures = run_student(args.corpus, args.test, args.model, args.out, args.overrides)
    (args.out / "summary.json").write_text(json.dumps(figures, indent=1))
    names = {"train": "trained", "eval-base": "untrained evaluated (alongside)", "eval": "trained evaluated"}
    ran = [f"{names[part]} in {took:.0f} s" for part, took in figures["seconds"].items()]
    reused = [names[part].split(" (")[0] for part in names if part not in figures["seconds"]]
    print("\nstudent: " + "; ".join(ran + ([f"reused (same inputs): {', '.join(reused)}"] if reused else [])) + "\n")
    print(render(figures))


if __name__ == "__main__":
    main()
