"""How reliably the demo's student learns both modalities, as pass counts over corpora and SFT lengths.

    python bench/demo_student.py --corpus outputs/demo/corpus --test outputs/demo/av-n320/manifest_test.jsonl
        [--model outputs/tiny/omni] [--steps 400,800] [--size 40] [--subsets 5] [--out bench/demo_student.json]

The demo's kept corpus depends on which answers the sampling teachers drew, so a student that learns
only on lucky draws makes a flaky demo (and a flaky ``tests/test_demo_miniature.py``). This bench
replays that variation without the teachers: from one built corpus it draws ``--subsets`` seeded
subsets of ``--size`` kept samples and, for each SFT length in ``--steps``, trains a fresh student
on each subset (SFT only, ``configs/train/demo.yaml`` otherwise) and evaluates it on the test split in
the av, a and v settings. A run passes when the student learned both modalities
(``demo.summary.learned_both``: the miniature test's criterion). It prints and writes,
per SFT length, the passes out of the subsets and every run's accuracies. About 1.5 to 2 minutes
per run on 2 cores. A run whose student and evaluation in ``--work`` were made from the same inputs
is reused (``demo.student``), so an interrupted bench resumes and a changed config retrains.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_subset(corpus: Path, size: int, seed: int, out: Path) -> dict[str, int]:
    """A corpus folder holding ``size`` of ``corpus``'s kept rows (seeded), its media shared by a link;
    returns the subset's answer counts."""
    from corpus.store import read_frame

    rows = read_frame(corpus)
    if rows.empty:
        raise SystemExit(f"no kept rows under {corpus / 'corpus'}: --corpus must be a build-avrt output folder")
    if size < len(rows):
        rows = rows.sample(n=size, random_state=seed)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "corpus" / "train.parquet")
    for media in ("cache", "media"):  # the rows' media paths are relative to the corpus folder
        link = out / media
        if (corpus / media).is_dir() and not link.exists():
            link.symlink_to((corpus / media).resolve(), target_is_directory=True)
    return {k: int(v) for k, v in sorted(rows["answer"].value_counts().items())}


def train_and_evaluate(model: Path, corpus: Path, test: Path, steps: int, out: Path) -> dict[str, float]:
    """SFT a fresh student for ``steps`` on ``corpus`` with the demo's config; its test accuracies."""
    from demo.student import evaluated, student_config, trained
    from demo.summary import accuracies

    config = student_config(corpus, model, out / "student", ["stages=[sft]", f"sft.max_steps={steps}"])
    threads = os.cpu_count() or 1
    final = trained(config, threads)
    return accuracies(evaluated(final, test, corpus, out / "eval", config.grpo.max_completion_length, threads))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python bench/demo_student.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a build-avrt output folder of the demo's task")
    parser.add_argument("--test", type=Path, required=True, help="the task's manifest_test.jsonl")
    parser.add_argument("--model", type=Path, default=ROOT / "outputs/tiny/omni", help="the fresh tiny student")
    parser.add_argument("--steps", default="400,800", help="comma-separated SFT lengths to compare")
    parser.add_argument("--size", type=int, default=40, help="kept samples per subset")
    parser.add_argument("--subsets", type=int, default=5, help="subsets (seeds 1..N) per SFT length")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/bench-demo-student", help="scratch folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/demo_student.json", help="where to write results")
    args = parser.parse_args(argv)
    from demo.summary import learned_both

    results: dict[str, dict] = {}
    for steps in (int(s) for s in args.steps.split(",")):
        runs = []
        for seed in range(1, args.subsets + 1):
            work = args.work / f"steps{steps}-size{args.size}-seed{seed}"
            answers = write_subset(args.corpus, args.size, seed, work / "corpus")
            accuracy = train_and_evaluate(args.model, work / "corpus", args.test, steps, work)
            runs.append({"subset_seed": seed, "answers": answers, "accuracy": accuracy,
                         "learned_both": learned_both(accuracy)})
            print(json.dumps({"sft_steps": steps, **runs[-1]}), flush=True)
        results[str(steps)] = {"passed": sum(r["learned_both"] for r in runs), "runs": runs}
    report = {"corpus": str(args.corpus), "size": args.size, "subsets": args.subsets, "by_sft_steps": results}
    args.out.write_text(json.dumps(report, indent=1))
    for steps, r in results.items():
        print(f"SFT {steps} steps: learned both modalities in {r['passed']} of {args.subsets} subsets of {args.size}")
    return report


if __name__ == "__main__":
    main()
