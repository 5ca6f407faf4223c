"""The trainer on a GPU at the paper's scale: SFT and GRPO settings side by side, from one run.

    python bench/gpu_train.py [--out bench/gpu_train] [--model DIR] [--settings sft_old,sft_default,...]
    python bench/gpu_train.py --smoke        # the same path on CPU with the tiny student (a check, no figures)

Builds the Qwen2.5-Omni-3B-shaped student (``training.tiny_models --preset omni-3b-shape``, all 36 text
layers, random weights, bf16) on the GPU unless ``--model`` names one, writes a 16-row corpus at the real
input sizes (8 frames 1280x720 + 10 s of audio, traces of 3 to 9 sentences), and runs each setting in
its own process through the trainer's own builders (``configs/recipes/avrt.yaml`` plus the setting's
overrides). Per setting it reports the median step time (first step dropped as warm-up), SFT tokens/s
(TRL's token count), GRPO's rollout share of the step (``generate`` timed), peak GPU memory, the GPU's
mean utilisation over the timed steps and over the rollouts (``nvidia-smi`` sampled every 0.2 s), and
the memory plan the trainer chose. GRPO runs 2 prompts x G=4 with 256 new tokens per completion.
After the last GRPO setting it times the portable weight sync's disk half at this size: the thinker's
tensors written in the full ``thinker.*`` naming to tmpfs and read back onto the GPU.

Settings: ``sft_old`` (batch 1 x 8 accumulation, checkpointing on: the earlier default on CUDA),
``sft_b1_nockpt`` (1 x 8, off), ``sft_default`` (the config as shipped: 4 x 2, checkpointing and
micro-batch from the memory plan, length-grouped batches), ``grpo_old`` (checkpointing on),
``grpo_default`` (as shipped), and, where vLLM is installed (``.venv-vllm``, ``$VLLM_BIN`` or ``vllm`` on
``PATH``), ``grpo_vllm`` (``grpo.rollout: vllm``: a rollout server started on the same GPU, the weights
synced before every step, through CUDA IPC on a GPU) and ``grpo_vllm_files`` (the same, weights through tmpfs);
the sync's seconds come from the trainer's ``rollout/sync_seconds``. Needs
only torch on the GPU host, plus the project's wheels (``docs/performance.md`` says which).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "sft_old": ("sft", ["sft.per_device_train_batch_size=1", "sft.gradient_accumulation_steps=8",
                        "activation_checkpointing=true", "sft.train_sampling_strategy=random"]),
    "sft_b1_nockpt": ("sft", ["sft.per_device_train_batch_size=1", "sft.gradient_accumulation_steps=8",
                              "activation_checkpointing=false", "sft.train_sampling_strategy=random"]),
    "sft_default": ("sft", []),
    "grpo_old": ("grpo", ["activation_checkpointing=true"]),
    "grpo_default": ("grpo", []),
    # run by default where vLLM is found (serving.vllm_server); weights through CUDA IPC on a GPU (auto)
    "grpo_vllm": ("grpo", ["grpo.rollout=vllm", "grpo.rollout_weight_sync=auto"]),
    "grpo_vllm_files": ("grpo", ["grpo.rollout=vllm", "grpo.rollout_weight_sync=files"]),  # weights through tmpfs
}
VLLM_SETTINGS = ("grpo_vllm", "grpo_vllm_files")
SENTENCE = "The frames and the sound together point to one option. "


def write_corpus(out: Path, n: int, size: tuple[int, int], seconds: float) -> Path:
    """``n`` rows at the given media size whose traces vary in length (3 to 9 sentences)."""
    import pandas as pd

    from bench.train_step import write_real_corpus

    write_real_corpus(out, n=n, size=size, seconds=seconds)
    part = out / "corpus" / "part-0.parquet"
    frame = pd.read_parquet(part)
    frame["answer"] = ["ABCD"[i % 4] for i in range(len(frame))]
    frame["merged"] = [f"<think>{SENTENCE * (3 + (i * 5) % 7)}</think><answer>{a}</answer>"
                       for i, a in enumerate(frame["answer"])]
    frame.to_parquet(part)
    return out


class GpuSampler:
    """``nvidia-smi`` utilisation samples (epoch seconds, percent) in a background thread."""

    def __init__(self, interval_ms: int = 200):
        self.samples: list[tuple[float, float]] = []
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          f"-lms={interval_ms}"], stdout=subprocess.PIPE, text=True)
        except FileNotFoundError:
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip())))
            except ValueError:
                continue

    def mean(self, windows: list[tuple[float, float]]) -> float | None:
        inside = [u for t, u in self.samples if any(a <= t <= b for a, b in windows)]
        return round(statistics.mean(inside), 1) if inside else None

    def close(self) -> None:
        if self.proc:
            self.proc.terminate()


def run_setting(name: str, model: str, corpus: str, out_dir: str, steps: int, completion: int,
                smoke: bool) -> dict:
    """One setting in this process; returns its figures."""
    import torch
    from transformers import TrainerCallback

    from bench.train_step import fixed_length
    from training.grpo import build_grpo_trainer, open_rollout_engine
    from training.sft import build_sft_trainer
    from training.train_config import load_config

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    stage, extra = SETTINGS[name]
    config_file = ROOT / "configs" / "train" / ("tiny.yaml" if smoke else "avrt.yaml")
    overrides = [f"model={model}", f"corpus={corpus}", f"output_dir={out_dir}", f"{stage}.max_steps={steps}",
                 f"{stage}.save_steps=100000", f"{stage}.logging_steps=1", f"{stage}.warmup_steps=0",
                 f"grpo.max_completion_length={completion}", "grpo.per_device_train_batch_size=4",
                 "grpo.gradient_accumulation_steps=2", "data.max_samples=null", *extra]
    if smoke:
        overrides += ["activation_checkpointing=null"] if not extra else []
    config = load_config(config_file, overrides)
    build = build_sft_trainer if stage == "sft" else build_grpo_trainer
    stack = contextlib.ExitStack()
    engine = open_rollout_engine(config, model, Path(out_dir) / name, stack) if stage == "grpo" else None
    trainer = build(config, model, Path(out_dir) / name) if engine is None else build(config, model,
                                                                                        Path(out_dir) / name, engine)
    windows, tokens, rollouts = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.start, self.tokens = time.time(), getattr(trainer, "_total_train_tokens", 0)

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            windows.append((self.start, time.time()))
            tokens.append(getattr(trainer, "_total_train_tokens", 0) - self.tokens)

    trainer.add_callback(Timer())
    if stage == "grpo":
        fixed_length(trainer, completion)
        generate = trainer._generate_single_turn

        def timed_generate(*args, **kwargs):
            sync()
            start = time.time()
            out = generate(*args, **kwargs)
            sync()
            rollouts.append((start, time.time()))
            return out

        trainer._generate_single_turn = timed_generate
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with stack:
        trainer.train()
    measured = windows[1:] or windows
    step_s = [b - a for a, b in measured]
    rollout_s = sum(b - a for a, b in rollouts if a >= measured[0][0])
    result = {
        "setting": name, "stage": stage, "overrides": extra,
        "micro_batch": trainer.args.per_device_train_batch_size,
        "accumulation": trainer.args.gradient_accumulation_steps,
        "checkpointing": bool(trainer.args.activation_checkpointing),
        "plan": json.loads((Path(out_dir) / name / "memory_plan.json").read_text()),
        "steps_timed": len(step_s), "step_s": round(statistics.median(step_s), 2),
        "step_s_all": [round(b - a, 2) for a, b in windows], "windows": measured,
        "rollout_windows": [w for w in rollouts if w[0] >= measured[0][0]],
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 1) if cuda else None,
    }
    if stage == "sft":
        timed_tokens = tokens[1:] or tokens
        result["tokens_per_step"] = round(statistics.mean(timed_tokens))
        result["tokens_per_s"] = round(sum(timed_tokens) / sum(step_s))
    else:
        result["rollout_share"] = round(rollout_s / sum(step_s), 2)
        syncs = [r["rollout/sync_seconds"] for r in trainer.state.log_history if "rollout/sync_seconds" in r]
        if syncs:
            result["sync_s"] = round(statistics.median(syncs[1:] or syncs), 2)
    if stage == "grpo" and name == "grpo_default":
        result["sync"] = time_portable_sync(trainer.model, Path(out_dir))
    return result


def time_portable_sync(model, fallback: Path) -> dict:
    """Seconds for the portable sync's disk half at this size: the trainer's own ``training.weight_sync.export_weights``
    (all thinker tensors, ``thinker.*`` checkpoint names) to tmpfs (``/dev/shm`` when it has room, else
    ``fallback``), and reading the file back onto the device."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from training.encoders import thinker
    from training.weight_sync import WEIGHTS_FILE, export_weights

    need = 2 * sum(p.numel() * p.element_size() for p in thinker(model).parameters())
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and shutil.disk_usage(shm).free > need else fallback
    start = time.perf_counter()
    folder = export_weights(model, root / "avrt-sync-bench", everything=True)
    written = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_file(str(folder / WEIGHTS_FILE), device=device)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    read = time.perf_counter()
    size = (folder / WEIGHTS_FILE).stat().st_size
    del loaded
    shutil.rmtree(folder, ignore_errors=True)
    return {"folder": str(root), "gib": round(size / 2**30, 2), "write_s": round(written - start, 2),
            "read_to_device_s": round(read - written, 2), "total_s": round(read - start, 2)}


def build_model(out: Path, smoke: bool) -> str:
    """The 3B-shaped student (36 text layers, bf16) built on the GPU, or for ``--smoke`` the tiny one with
    head_dim 64 (vLLM's CPU attention needs it)."""
    code = ("import torch, sys\n"
            "torch.set_default_device('cuda' if torch.cuda.is_available() else 'cpu')\n"
            "from training.tiny_models import main\n"
            "main(sys.argv[1:])\n")
    args = ["--preset", "vllm-tiny", "--out", str(out)] if smoke else ["--preset", "omni-3b-shape", "--text-layers", "36", "--out", str(out)]
    subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, check=True)
    return str(out / "omni") if smoke else str(out)


def default_settings() -> list[str]:
    from serving.vllm_server import find_launcher

    return [name for name in SETTINGS if name not in VLLM_SETTINGS or find_launcher(must_exist=False).exists()]


def print_table(results: list[dict]) -> None:
    print(f"\n{'setting':15} {'batch':>7} {'ckpt':>5} {'s/step':>7} {'tokens/s':>9} {'rollout':>8} "
          f"{'peak GiB':>9} {'GPU %':>6} {'GPU % rollouts':>15}")
    for r in results:
        if "error" in r:
            print(f"{r['setting']:15} failed: {r['error'][:100]}")
            continue
        print(f"{r['setting']:15} {r['micro_batch']:>3} x {r['accumulation']:<2} {'on' if r['checkpointing'] else 'off':>5} "
              f"{r['step_s']:>7} {r.get('tokens_per_s', ''):>9} {r.get('rollout_share', ''):>8} "
              f"{str(r['peak_alloc_gib']):>9} {str(r.get('gpu_util')):>6} {str(r.get('gpu_util_rollouts', '')):>15}")
    base = {r["setting"]: r for r in results if "error" not in r}
    if "sft_old" in base and "sft_default" in base:
        print(f"SFT tokens/s, default vs old: {base['sft_default']['tokens_per_s'] / base['sft_old']['tokens_per_s']:.2f}x")
    if "grpo_old" in base and "grpo_default" in base:
        print(f"GRPO s/step, default vs old: {base['grpo_default']['step_s'] / base['grpo_old']['step_s']:.2f}x")
    if "grpo_vllm" in base and "grpo_default" in base:
        print(f"GRPO s/step, vllm vs hf rollouts: {base['grpo_vllm']['step_s'] / base['grpo_default']['step_s']:.2f}x "
              f"(sync {base['grpo_vllm'].get('sync_s')} s per step)")
    if "grpo_vllm" in base and "grpo_vllm_files" in base:
        print(f"weight sync per step: {base['grpo_vllm'].get('sync_s')} s (auto: CUDA IPC on a GPU) vs "
              f"{base['grpo_vllm_files'].get('sync_s')} s through tmpfs")
    for r in results:
        if "sync" in r:
            print(f"portable sync at this size: {r['sync']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/gpu_train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_train", help="work folder and results.json")
    parser.add_argument("--model", help="an existing student directory (default: build the 3B shape)")
    parser.add_argument("--settings", help=f"comma-separated, from {', '.join(SETTINGS)} (default: all; grpo_vllm "
                                           "only where vLLM is found)")
    parser.add_argument("--sft-steps", type=int, default=5, help="SFT steps per setting (the first is warm-up)")
    parser.add_argument("--grpo-steps", type=int, default=3, help="GRPO steps per setting (the first is warm-up)")
    parser.add_argument("--completion-tokens", type=int, default=256, help="new tokens per GRPO completion")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per setting before it is stopped")
    parser.add_argument("--smoke", action="store_true", help="tiny student on CPU: checks the path, no figures")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: one setting in this process
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        steps = args.sft_steps if SETTINGS[args.run_one][0] == "sft" else args.grpo_steps
        result = run_setting(args.run_one, args.model, args.corpus, str(args.out / "runs"), steps,
                             args.completion_tokens, args.smoke)
        print("RESULT " + json.dumps(result), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    started = time.time()
    corpus = write_corpus(args.out / "corpus", n=16 if not args.smoke else 8,
                          size=(64, 36) if args.smoke else (1280, 720), seconds=2.0 if args.smoke else 10.0)
    model = args.model or build_model(args.out / "model", args.smoke)
    print(f"model {model}, corpus {corpus}: ready in {time.time() - started:.0f}s", flush=True)
    sampler = GpuSampler()
    results = []
    for name in (args.settings.split(",") if args.settings else default_settings()):
        t = time.time()
        command = [sys.executable, __file__, "--run-one", name, "--model", model, "--corpus", str(corpus),
                   "--out", str(args.out), "--sft-steps", str(args.sft_steps), "--grpo-steps", str(args.grpo_steps),
                   "--completion-tokens", str(args.completion_tokens), *(["--smoke"] if args.smoke else [])]
        log = args.out / f"{name}.log"
        try:
            with log.open("w") as handle:
                subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               timeout=args.timeout, check=False)
            lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {"setting": name, "error": log.read_text()[-1500:]}
        except subprocess.TimeoutExpired:
            result = {"setting": name, "error": f"timed out after {args.timeout}s"}
        if "error" not in result:
            result["gpu_util"] = sampler.mean(result.pop("windows"))
            rollouts = result.pop("rollout_windows")
            result["gpu_util_rollouts"] = sampler.mean(rollouts) if rollouts else None
        result["wall_s"] = round(time.time() - t, 1)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "error"} if "error" not in result else result),
              flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    sampler.close()
    print_table(results)
    print(f"total {time.time() - started:.0f}s; results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
