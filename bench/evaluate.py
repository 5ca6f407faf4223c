"""Evaluation through Hugging Face ``generate`` against vLLM: the same items through ``--backend hf`` and
``--backend vllm`` in one run.

    python bench/evaluate.py [--model DIR] [--clips 8] [--seconds 10] [--size 320x240] [--modalities av]
        [--max-new-tokens 32] [--gpus 0,1] [--vllm-python PY] [--out bench/evaluate.json]

The same ``--clips`` synthetic clips (8 frames, 10 s of audio, greedy, the default ``aligned``
layout) go through ``python -m evaluation.evaluate`` twice, once per backend, each into a fresh
folder. Printed and written to ``--out``: per backend, items/s and generated tokens/s of the
generation (``report.json``'s ``throughput``) and the command's wall seconds (the vllm backend's
include exporting the checkpoint and starting its servers), the ratio vllm / hf, and how many answers
are identical (on CPU in fp32 all should be; in bf16 on a GPU long answers may drift).

Without ``--model`` the vLLM-servable tiny student (``training.tiny_models --preset vllm-tiny``) is
built in a temporary folder, on CPU. ``bench/gpu_host.sh`` runs this at the 3B shape where vLLM is found.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/evaluate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a student checkpoint (default: a tiny one, built)")
    parser.add_argument("--clips", type=int, default=8, help="synthetic clips (items)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--size", default="320x240", help="frame size of the clips, WxH")
    parser.add_argument("--modalities", default="av", help="settings, as evaluation.evaluate's --modalities")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hf-batch-size", type=int, help="hf backend's batch (default: its own, 4)")
    parser.add_argument("--gpus", help="vllm backend: one server per GPU (default: one server)")
    parser.add_argument("--vllm-python", help="a Python with vLLM (default .venv-vllm)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "evaluate.json")
    return parser.parse_args(argv)


def evaluated(backend: str, common: list[str], out: Path, extra: list[str]) -> tuple[dict, float, dict]:
    """One ``evaluation.evaluate`` run: its report, the command's wall seconds, and its answers."""
    from evaluation.evaluate import PREDICTIONS, read_predictions, run

    started = time.perf_counter()
    report = run([*common, "--backend", backend, "--out", str(out), *extra])
    wall = time.perf_counter() - started
    rows = read_predictions(out / PREDICTIONS)
    answers = {(r["id"], r["modality"]): (r["output"] or "").rstrip("\ufffd") for r in rows}
    return report, wall, answers


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from media.synthetic import write_dataset

    with tempfile.TemporaryDirectory(prefix="avrt-bench-eval-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from training.tiny_models import build_all

            model = build_all(work / "tiny", seed=0, preset="vllm-tiny")["omni"]
        width, height = (int(v) for v in args.size.lower().split("x"))
        manifest = write_dataset(work / "clips", n=args.clips, seed=1, seconds=args.seconds, size=(width, height))
        common = ["--benchmark", "manifest", "--data", str(manifest), "--model", str(model), "--quiet",
                  "--modalities", args.modalities, "--max-new-tokens", str(args.max_new_tokens)]
        hf, hf_wall, hf_answers = evaluated(
            "hf", common, work / "hf", ["--batch-size", str(args.hf_batch_size)] if args.hf_batch_size else [])
        vllm, vllm_wall, vllm_answers = evaluated(
            "vllm", common, work / "vllm", [*(["--gpus", args.gpus] if args.gpus else []),
                                            *(["--vllm-python", args.vllm_python] if args.vllm_python else []),
                                            "--export-cache", str(work / "exports")])
    report = {"machine": platform.node(), "model": str(args.model or "tiny (vllm-tiny preset)"),
              "clips": args.clips, "seconds": args.seconds, "size": args.size, "modalities": args.modalities,
              "max_new_tokens": args.max_new_tokens, "gpus": args.gpus,
              "hf": {**hf["throughput"], "wall_s": round(hf_wall, 1)},
              "vllm": {**vllm["throughput"], "wall_s": round(vllm_wall, 1)},
              "identical_answers": sum(vllm_answers.get(k) == v for k, v in hf_answers.items()),
              "answers": len(hf_answers)}
    if hf["throughput"]["items_per_s"]:
        report["items_per_s_vllm_over_hf"] = round(report["vllm"]["items_per_s"] / report["hf"]["items_per_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'backend':8} {'items/s':>9} {'tokens/s':>9} {'wall s':>8}")
    for name in ("hf", "vllm"):
        pace = report[name]
        print(f"{name:8} {pace['items_per_s']:>9} {str(pace['new_tokens_per_s']):>9} {pace['wall_s']:>8}")
    print(f"vllm / hf items/s: {report.get('items_per_s_vllm_over_hf')}; identical answers "
          f"{report['identical_answers']} of {report['answers']}; wall s of vllm include export and server start")
    print(f"report: {args.out}")
    return report


if __name__ == "__main__":
    main()
