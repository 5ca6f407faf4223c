"""GRPO rollouts with Hugging Face ``generate`` against vLLM, and the cost of a weight sync, in one run.

    python bench/rollout.py [--model DIR] [--corpus OUTDIR] [--prompts 4] [--generations 4]
        [--max-tokens 32] [--repeats 3] [--vllm-url URL] [--out bench/rollout.json]

The same prompts (the corpus's first ``--prompts`` rows, G = ``--generations`` completions each) and
the same model go through the trainer's own two rollout paths (``training.grpo.AVGRPOTrainer``):
``grpo.rollout=hf`` (``generate`` in the trainer) and ``grpo.rollout=vllm`` (``training.rollout``:
one request of ``n`` = G per prompt). Each path runs ``--repeats`` times after one warm-up; the
report gives completion tokens per second (median), the ratio vllm / hf, and the sync: exporting
the trainable weights to tmpfs (``training.weight_sync.export_weights``) and the server's reload
(``RolloutEngine.load_weights``), median seconds each.

Without ``--model`` the vLLM-servable tiny student (``training.tiny_models --preset vllm-tiny``) is
built in a temporary folder; without ``--corpus`` a corpus of synthetic clips. Without
``--vllm-url`` a dev-mode server is started from ``.venv-vllm`` as the trainer starts it (its start-up
time is reported too); a given server must serve ``--model`` in dev mode with
``--trust-request-mm-kwargs``, behind the guard with the secret in ``$AVRT_ROLLOUT_SECRET``
(docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/rollout.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a thinker checkpoint (default: a tiny one, built)")
    parser.add_argument("--corpus", type=Path, help="build-avrt OUTDIR (default: synthetic clips, built)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion length")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per path (after one warm-up)")
    parser.add_argument("--vllm-url", help="a running dev-mode vLLM server, its secret in $AVRT_ROLLOUT_SECRET "
                                           "(default: start one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "rollout.json")
    return parser.parse_args(argv)


def build_inputs(model: Path | None, corpus: Path | None, work: Path) -> tuple[Path, Path]:
    if model is None:
        from training.tiny_models import build_all

        model = build_all(work / "tiny", seed=0, preset="vllm-tiny")["omni"]
    if corpus is None:
        from media.synthetic import write_dataset
        from tests.corpus_fixture import write_corpus

        write_dataset(work / "synthetic", n=8, seed=0)
        corpus = write_corpus(work / "synthetic", work / "corpus")
    return model, corpus


def rollout_round(trainer, rows: list[dict], generations: int) -> tuple[int, float]:
    """One rollout of every prompt through the trainer's path: (completion tokens, seconds)."""
    inputs = [row for row in rows for _ in range(generations)]
    trainer._row_media = trainer._prepare_media(inputs)
    prompt_ids, _, fields = trainer._tokenize_prompts([r["prompt"] for r in inputs])
    started = time.perf_counter()
    completions, _ = trainer._generate_single_turn(prompt_ids, None, fields, generations)
    return sum(len(c) for c in completions), time.perf_counter() - started


def measure(trainer, rows, generations: int, repeats: int) -> dict:
    rollout_round(trainer, rows, generations)  # warm-up (the vLLM path also syncs here)
    rounds = [rollout_round(trainer, rows, generations) for _ in range(repeats)]
    speeds = [tokens / seconds for tokens, seconds in rounds]
    return {"tokens_per_round": [t for t, _ in rounds], "seconds": [round(s, 3) for _, s in rounds],
            "tokens_per_s": round(statistics.median(speeds), 1)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import os
    from contextlib import ExitStack

    from serving.vllm_server import SECRET_ENV, new_secret
    from training.data import load_corpus
    from training.grpo import build_grpo_trainer, grpo_dataset
    from training.rollout import RolloutEngine, start_rollout_server
    from training.train_config import load_config
    from training.weight_sync import export_weights

    report: dict = {"machine": platform.platform(), "prompts": args.prompts, "generations": args.generations,
                    "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="avrt-bench-rollout-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        model, corpus = build_inputs(args.model, args.corpus, work)
        common = [f"model={model}", f"corpus={corpus}", "precision=fp32" if not _cuda() else "precision=auto",
                  "grpo.beta=0", f"grpo.num_generations={args.generations}",
                  f"grpo.per_device_train_batch_size={args.generations}",
                  f"grpo.max_completion_length={args.max_tokens}", "grpo.temperature=1.0"]
        config = load_config(ROOT / "configs" / "train" / "tiny.yaml", common)
        rows = grpo_dataset(load_corpus(corpus, config.data).head(args.prompts)).to_list()

        hf = build_grpo_trainer(config, str(model), work / "hf")
        report["hf"] = measure(hf, rows, args.generations, args.repeats)
        del hf

        url, secret = args.vllm_url, os.environ.get(SECRET_ENV)
        if url is None:
            started = time.perf_counter()
            secret = new_secret()
            server = start_rollout_server(model, work / "vllm", secret, dtype="bfloat16" if _cuda() else "float32")
            stack.callback(server.stop)
            report["server_start_s"] = round(time.perf_counter() - started, 1)
            url = server.base_url
        engine = RolloutEngine([url], sync_dir=work / "sync", secret=secret)
        config = load_config(ROOT / "configs" / "train" / "tiny.yaml", [*common, "grpo.rollout=vllm"])
        trainer = build_grpo_trainer(config, str(model), work / "vllm", engine)
        report["vllm"] = measure(trainer, rows, args.generations, args.repeats)
        report["vllm_over_hf"] = round(report["vllm"]["tokens_per_s"] / report["hf"]["tokens_per_s"], 2)

        exports, reloads = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            folder = export_weights(trainer.model, work / "sync" / "current")
            exports.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.load_weights(folder)
            reloads.append(time.perf_counter() - started)
        size = sum(f.stat().st_size for f in folder.iterdir())
        report["sync"] = {"export_s": round(statistics.median(exports), 4), "reload_s": round(statistics.median(reloads), 4),
                          "total_s": round(statistics.median(e + r for e, r in zip(exports, reloads)), 4),
                          "bytes": size}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"hf {report['hf']['tokens_per_s']} tok/s, vllm {report['vllm']['tokens_per_s']} tok/s "
          f"(x{report['vllm_over_hf']}); sync {report['sync']['total_s']} s "
          f"(export {report['sync']['export_s']} s + reload {report['sync']['reload_s']} s, "
          f"{report['sync']['bytes'] / 2**20:.1f} MiB); report {args.out}")
    return report


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
