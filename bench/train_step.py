"""Seconds per GRPO step with audio + 8 frames vs text only, on the tiny student (CPU), and peak RSS.

    python bench/train_step.py [--corpus OUTDIR] [--model DIR] [--steps 4] [--out bench/train_step.json]

Each mode runs in its own process (so peak RSS is its own): ``av`` (frames + audio, the real
setting) and ``text`` (``data.vision=false data.audio=false``). Reports the median of TRL's
per-step ``step_time`` (generation + old/ref log-probs + loss + backward) over the steps after the
first (warm-up), the ratio av/text, and each process's peak resident memory. Without ``--corpus`` a
corpus is built from synthetic clips in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_mode(mode: str, corpus: str, model: str, steps: int, out_dir: str) -> dict:
    from training.grpo import build_grpo_trainer
    from training.runtime import read_metrics
    from training.train_config import load_config

    overrides = [f"model={model}", f"corpus={corpus}", f"output_dir={out_dir}", f"grpo.max_steps={steps}",
                 "grpo.save_steps=100000", "grpo.beta=0.01", "grpo.logging_steps=1"]
    if mode == "text":
        overrides += ["data.vision=false", "data.audio=false"]
    config = load_config(ROOT / "configs" / "train" / "tiny.yaml", overrides)
    stage = Path(out_dir) / "grpo"
    trainer = build_grpo_trainer(config, model, stage)
    trainer.train()
    times = [r["step_time"] for r in read_metrics(stage / "metrics.jsonl") if "step_time" in r]
    return {"mode": mode, "step_seconds": statistics.median(times[1:] or times), "steps": len(times),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def ensure_model(model: str | None, tmp: Path) -> str:
    if model:
        return model
    from training.tiny_models import build_omni

    default = ROOT / "outputs" / "tiny" / "omni"
    return str(default if (default / "config.json").exists() else build_omni(tmp / "omni"))


def ensure_corpus(corpus: str | None, tmp: Path) -> str:
    if corpus:
        return corpus
    from media.synthetic import write_dataset
    from tests.corpus_fixture import write_corpus

    clips = tmp / "clips"
    write_dataset(clips, n=4, seed=0, odd=False)
    return str(write_corpus(clips, tmp / "corpus"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/train_step.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="build-avrt OUTDIR (default: synthetic clips in a temp dir)")
    parser.add_argument("--model", help="tiny student directory (default: outputs/tiny/omni or built)")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per mode (first is warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "train_step.json", help="JSON result file")
    parser.add_argument("--mode", choices=["av", "text"], help=argparse.SUPPRESS)  # internal: one mode
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.corpus, args.model, args.steps, args.work)))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus, model = ensure_corpus(args.corpus, tmp), ensure_model(args.model, tmp)
        results = {}
        for mode in ("av", "text"):
            done = subprocess.run([sys.executable, __file__, "--mode", mode, "--corpus", corpus, "--model", model,
                                   "--steps", str(args.steps), "--work", str(tmp / mode)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "what": "GRPO step on the tiny student, CPU: G=4, 1 prompt/step, 24-token completions, beta=0.01",
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        **results,
        "ratio_av_over_text": results["av"]["step_seconds"] / results["text"]["step_seconds"],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for mode in ("av", "text"):
        r = results[mode]
        print(f"{mode:>4}: {r['step_seconds']:.2f} s/step (median of {r['steps'] - 1}), peak RSS {r['peak_rss_mib']:.0f} MiB")
    print(f"ratio audio+frames / text-only: {report['ratio_av_over_text']:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
