"""Trainer cost on CPU, as ratios in one run: media vs text-only GRPO steps, encodings, real-size steps.

    python bench/train_step.py [--corpus OUTDIR] [--model DIR] [--steps 4]
        [--real-model DIR [--real-completion-tokens 16]] [--out bench/train_step.json]

**Tiny student** (``--model``, default ``outputs/tiny/omni`` or built), each mode in its own process
(so peak RSS is its own): ``av`` (frames + audio, encoders cached: the default), ``av_uncached``
(``encoder_cache=false``: the encoders run in every forward, the old behaviour) and ``text``
(``data.vision=false data.audio=false``). Per mode: the median of TRL's per-step ``step_time``
(generation + log-probs + loss + backward; first step dropped as warm-up; every rollout generates
exactly the completion length, so all modes do the same text work), time in
``_prepare_media`` (loading, processing and, when cached, encoding), prompt length, media items
encoded per prompt per step, peak RSS; and the ratios av / text and av_uncached / text.

**Real-size student** (``--real-model``, from ``python -m training.tiny_models --preset omni-3b-shape
--text-layers 2``), bf16 on CPU, one process, on a corpus of 8 random 1280x720 frames + 10 s of
audio per item: seconds per SFT step and per GRPO step (G=4, ``--real-completion-tokens``,
beta=0: no reference model, to fit in memory; with the encoders cached and uncached), the share of each step spent in the encoders, and
one SFT backward without checkpointing, with checkpointing, and with checkpointing but uncached
encoders (the old behaviour); ratios against the backward without checkpointing.
Without ``--corpus`` the tiny corpus is built from synthetic clips in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY_MODES = {
    "av": [],
    "av_uncached": ["encoder_cache=false"],
    "text": ["data.vision=false", "data.audio=false"],
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EncoderTimer:
    """Wall time spent in the vision and audio encoders (forward hooks), and the items they encoded."""

    def __init__(self, model):
        from training.encoders import thinker

        inner = thinker(model).model
        self.seconds, self.items, self._start, self.hooks = 0.0, 0, {}, []
        for module in (inner.visual, inner.audio_tower):
            self.hooks.append(module.register_forward_pre_hook(self._begin))
            self.hooks.append(module.register_forward_hook(self._end))

    def _begin(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _end(self, module, args, out):
        self.seconds += time.perf_counter() - self._start.pop(id(module))
        self.items += 1

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def step_times(trainer):
    """A callback recording each optimiser step's wall time on ``trainer``; returns the list it fills."""
    from transformers import TrainerCallback

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(StepTimer())
    return times


def fixed_length(trainer, tokens: int) -> None:
    """Every rollout generates exactly ``tokens`` tokens (no early end of turn), so modes do equal text work."""
    trainer.generation_config.min_new_tokens = tokens


def run_tiny_mode(mode: str, corpus: str, model: str, steps: int, out_dir: str) -> dict:
    from training.encoders import count_encodings
    from training.grpo import build_grpo_trainer
    from training.runtime import read_metrics
    from training.train_config import load_config

    overrides = [f"model={model}", f"corpus={corpus}", f"output_dir={out_dir}", f"grpo.max_steps={steps}",
                 "grpo.save_steps=100000", "grpo.beta=0.01", "grpo.logging_steps=1", *TINY_MODES[mode]]
    config = load_config(ROOT / "configs" / "train" / "tiny.yaml", overrides)
    stage = Path(out_dir) / "grpo"
    trainer = build_grpo_trainer(config, model, stage)
    fixed_length(trainer, config.grpo.max_completion_length)
    prepare, media_seconds = trainer._prepare_media, []

    def timed_prepare(inputs):
        start = time.perf_counter()
        rows = prepare(inputs)
        media_seconds.append(time.perf_counter() - start)
        return rows

    trainer._prepare_media = timed_prepare
    with count_encodings(trainer.model) as policy, count_encodings(trainer.ref_model) as reference:
        trainer.train()  # beta > 0: the reference model exists and is counted too
    times = [r["step_time"] for r in read_metrics(stage / "metrics.jsonl") if "step_time" in r]
    prompts = trainer.state.global_step * config.grpo.per_device_train_batch_size * config.grpo.gradient_accumulation_steps \
        // config.grpo.num_generations
    return {"mode": mode, "step_seconds": statistics.median(times[1:] or times), "steps": len(times),
            "prompts": prompts,
            "encodings_per_prompt_per_step": {kind: (policy[kind] + reference[kind]) / prompts
                                              for kind in ("visual", "audio")},
            "media_prep_seconds": statistics.median(media_seconds[1:] or media_seconds),
            "prompt_tokens": len(trainer._row_media[0]["prompt_ids"]),
            "peak_rss_mib": peak_rss_mib()}


def write_real_corpus(out: Path, n: int = 2, size=(1280, 720), seconds: float = 10.0) -> Path:
    """A corpus of ``n`` items with 8 random ``size`` frames and ``seconds`` of noise (the real input sizes)."""
    import numpy as np
    import pandas as pd

    from media import SAMPLE_RATE, save_audio, save_frames

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        frames = rng.integers(0, 255, (8, size[1], size[0], 3), dtype=np.uint8)
        paths = save_frames(frames, out / "media" / f"c{i}" / "frames")
        audio = save_audio((rng.standard_normal(int(SAMPLE_RATE * seconds)) * 0.1).astype(np.float32),
                           out / "media" / f"c{i}" / "audio.wav")
        rows.append({"id": f"c{i}", "split": "train", "question": "What makes the sound?",
                     "choices": ["a dog", "a car", "rain", "a bell"], "answer": "B",
                     "frames": [str(p.relative_to(out)) for p in paths], "audio": str(audio.relative_to(out)),
                     "duration": seconds, "merged": "<think>The engine noise and the road.</think><answer>B</answer>"})
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "corpus" / "part-0.parquet")
    return out


def _backward_seconds(trainer, batch, checkpointing: bool, cached: bool) -> tuple[float, int]:
    """One SFT loss forward (the trainer's own) and the timed backward; also encoder outputs requiring grad."""
    from training.encoders import count_encodings

    model = trainer.model
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainer.encode_frozen = cached
    try:
        with count_encodings(model) as counts:
            loss = trainer.compute_loss(model, dict(batch))
        start = time.perf_counter()
        loss.backward()
        seconds = time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        trainer.encode_frozen = True
        if checkpointing:
            model.activation_checkpointing_disable()
            model.disable_input_require_grads()
    return seconds, counts["outputs_requiring_grad"]


REAL_STAGES = {"sft": ("sft", []), "grpo": ("grpo", []), "grpo_uncached": ("grpo", ["encoder_cache=false"])}


def run_real(name: str, model: str, completion_tokens: int, out_dir: str) -> dict:
    """One real-size stage in this process: step time, encoder share (and, for SFT, the backward figures)."""
    import torch

    from training.grpo import build_grpo_trainer
    from training.sft import build_sft_trainer
    from training.train_config import load_config

    torch.manual_seed(0)
    corpus = write_real_corpus(Path(out_dir) / "corpus")
    config = load_config(ROOT / "configs" / "train" / "tiny.yaml", [
        f"model={model}", f"corpus={corpus}", f"output_dir={out_dir}", "precision=bf16",
        "activation_checkpointing=false", "sft.max_steps=1", "sft.save_steps=100000", "grpo.max_steps=1",
        "grpo.save_steps=100000", "grpo.beta=0", f"grpo.max_completion_length={completion_tokens}",
        "grpo.logging_steps=1", *REAL_STAGES[name][1]])
    stage = REAL_STAGES[name][0]
    build = build_sft_trainer if stage == "sft" else build_grpo_trainer
    trainer = build(config, model, Path(out_dir) / name)
    if stage == "grpo":
        fixed_length(trainer, completion_tokens)
    times, timer = step_times(trainer), EncoderTimer(trainer.model)
    trainer.train()
    timer.close()
    result = {"step_seconds": times[0], "encoder_seconds": timer.seconds, "encoder_share": timer.seconds / times[0],
              "encoder_calls": timer.items, "peak_rss_mib": peak_rss_mib()}
    if stage == "grpo":
        result.update(prompts=config.grpo.per_device_train_batch_size // config.grpo.num_generations,
                      num_generations=config.grpo.num_generations, completion_tokens=completion_tokens)
        return result
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    backward = {}
    for name, checkpointing, cached in (("plain", False, True), ("checkpointing", True, True),
                                        ("checkpointing_uncached_encoders", True, False)):
        seconds, grad_outputs = _backward_seconds(trainer, batch, checkpointing, cached)
        backward[name] = {"seconds": seconds, "encoder_outputs_requiring_grad": grad_outputs}
    for name in ("checkpointing", "checkpointing_uncached_encoders"):
        backward[name]["ratio_vs_plain"] = backward[name]["seconds"] / backward["plain"]["seconds"]
    result["backward"] = backward
    return result


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


def _subprocess(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{args[:2]} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/train_step.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="build-avrt OUTDIR for the tiny runs (default: synthetic clips)")
    parser.add_argument("--model", help="tiny student directory (default: outputs/tiny/omni or built)")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per tiny mode (first is warm-up)")
    parser.add_argument("--real-model", help="real-size student (python -m training.tiny_models --preset omni-3b-shape)")
    parser.add_argument("--real-completion-tokens", type=int, default=16, help="GRPO completion tokens, real size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "train_step.json", help="JSON result file")
    parser.add_argument("--mode", choices=[*TINY_MODES, *(f"real_{n}" for n in REAL_STAGES)], help=argparse.SUPPRESS)  # internal
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode and args.mode.startswith("real_"):
        print(json.dumps(run_real(args.mode.removeprefix("real_"), args.real_model, args.real_completion_tokens,
                                  args.work)))
        return
    if args.mode:
        print(json.dumps(run_tiny_mode(args.mode, args.corpus, args.model, args.steps, args.work)))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus, model = ensure_corpus(args.corpus, tmp), ensure_model(args.model, tmp)
        tiny = {}
        for mode in TINY_MODES:
            print(f"tiny {mode} ...", flush=True)
            tiny[mode] = _subprocess(["--mode", mode, "--corpus", corpus, "--model", model,
                                      "--steps", str(args.steps), "--work", str(tmp / mode)])
        real = {}
        for stage in REAL_STAGES if args.real_model else ():
            print(f"real-size student, {stage} ...", flush=True)
            real[stage] = _subprocess(["--mode", f"real_{stage}", "--real-model", args.real_model,
                                       "--real-completion-tokens", str(args.real_completion_tokens),
                                       "--work", str(tmp / f"real_{stage}")])
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "tiny": {"what": "GRPO step on the tiny student, CPU fp32: G=4, 1 prompt/step, 24-token completions, "
                         "beta=0.01", **tiny,
                 "ratio_av_over_text": tiny["av"]["step_seconds"] / tiny["text"]["step_seconds"],
                 "ratio_av_uncached_over_text": tiny["av_uncached"]["step_seconds"] / tiny["text"]["step_seconds"]},
    }
    if real:
        report["real"] = {"what": "omni-3b-shape student, bf16 on CPU, 8 frames 1280x720 + 10 s audio, "
                                  "SFT batch 1; GRPO 1 prompt x G=4, beta=0; one step each", **real,
                          "ratio_grpo_uncached_over_cached": real["grpo_uncached"]["step_seconds"]
                          / real["grpo"]["step_seconds"]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report, args.out)


def print_summary(report: dict, out: Path) -> None:
    tiny = report["tiny"]
    for mode in TINY_MODES:
        r = tiny[mode]
        enc = r["encodings_per_prompt_per_step"]
        print(f"tiny {mode:>11}: {r['step_seconds']:.2f} s/step (median of {r['steps'] - 1}; media loading, processing "
              f"and encoding {r['media_prep_seconds']:.2f} s; {r['prompt_tokens']} prompt tokens), encodings per prompt "
              f"per step: visual {enc['visual']:.1f}, audio {enc['audio']:.1f}; peak RSS {r['peak_rss_mib']:.0f} MiB")
    print(f"ratio audio+frames / text-only: {tiny['ratio_av_over_text']:.2f}x "
          f"(encoders uncached: {tiny['ratio_av_uncached_over_text']:.2f}x)")
    if "real" in report:
        real = report["real"]
        for stage in REAL_STAGES:
            r = real[stage]
            print(f"real {stage}: {r['step_seconds']:.1f} s/step, encoders {r['encoder_seconds']:.1f} s "
                  f"({100 * r['encoder_share']:.1f} %, {r['encoder_calls']} encoder calls)")
        print(f"real GRPO step, encoders uncached / cached: {real['ratio_grpo_uncached_over_cached']:.2f}x")
        b = real["sft"]["backward"]
        print(f"real SFT backward: plain {b['plain']['seconds']:.1f} s; checkpointing "
              f"{b['checkpointing']['seconds']:.1f} s ({b['checkpointing']['ratio_vs_plain']:.2f}x); checkpointing "
              f"with uncached encoders {b['checkpointing_uncached_encoders']['seconds']:.1f} s "
              f"({b['checkpointing_uncached_encoders']['ratio_vs_plain']:.2f}x)")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
