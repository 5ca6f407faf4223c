"""Train the audio-visual student: SFT cold start on the merged traces, then GRPO (AVRT 3.2, 4.2).

    python -m training.sft_then_grpo --config configs/train/avrt.yaml [--stages sft,grpo]
        [--model PATH_OR_ID] [--corpus OUTDIR] [--output-dir DIR] [key=value ...]

Reads build-avrt's corpus (``OUTDIR/corpus/*.parquet``); writes ``DIR/sft`` and ``DIR/grpo``, each
with ``checkpoint-N/``, ``final/`` (model + processor), ``config.yaml`` (resolved), ``metrics.jsonl``
and ``plots/*.png``. GRPO starts from ``DIR/sft/final`` when SFT ran (now or before), else from
``--model``. A stage whose ``final/`` exists is skipped; an interrupted stage resumes from its last
checkpoint. Overrides are dotted keys of ``training/train_config.py`` (``sft.max_steps=2``).
A mistake in the command (an unknown key, a ``--model`` folder or ``--corpus`` without kept rows, a
setting this machine cannot run) stops it before any model loads: one line, exit status 2.
Multi-GPU / DeepSpeed: ``accelerate launch --config_file configs/accelerate/zero2_offload.yaml -m
training.sft_then_grpo …``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from configs import UserError, missing_model, user_errors
from training.runtime import is_main_process, load_corpus, say
from training.train_config import TrainConfig, dump_config, read_config


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m training.sft_then_grpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config (configs/train/avrt.yaml, tiny.yaml)")
    parser.add_argument("--stages", help="comma-separated: sft,grpo | sft | grpo")
    parser.add_argument("--model", help="base student: hub id or local directory")
    parser.add_argument("--corpus", help="build-avrt output directory (holds corpus/*.parquet)")
    parser.add_argument("--output-dir", help="where the stage directories go")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. grpo.beta=0")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in (("model", "model"), ("corpus", "corpus"), ("output_dir", "output_dir")):
        if getattr(args, flag):
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    return args, overrides


def run(config: TrainConfig) -> dict[str, Path]:
    """Run the configured stages; returns each stage's ``final`` directory."""
    from training.plots import plot_stage

    out = Path(config.output_dir)
    results: dict[str, Path] = {}
    model_path = config.model
    for stage in ("sft", "grpo"):
        stage_dir = out / stage
        if stage == "grpo" and (out / "sft" / "final").is_dir():
            model_path = str(out / "sft" / "final")
        if stage not in config.stages:
            continue
        final = stage_dir / "final"
        if final.is_dir():
            say(f"[{stage}] already done: {final} (delete it to retrain)")
            results[stage] = final
            continue
        if is_main_process():
            dump_config(config, stage_dir / "config.yaml")
            (stage_dir / "init.json").write_text(json.dumps({"model": model_path}) + "\n")
        say(f"[{stage}] from {model_path} -> {stage_dir}")
        started = time.monotonic()
        if stage == "sft":
            from training.sft import run_sft

            final = run_sft(config, model_path, stage_dir)
        else:
            from training.grpo import run_grpo

            final = run_grpo(config, model_path, stage_dir)
        if is_main_process():
            plots = plot_stage(stage, stage_dir)
            say(f"[{stage}] done in {time.monotonic() - started:.0f}s: model {final}; "
                f"plots {', '.join(p.name for p in plots)}")
        results[stage] = final
    return results


def check_inputs(config: TrainConfig) -> None:
    """Refuse (``UserError``), before any model loads, what the run would otherwise fail on later: a base
    model folder that does not exist (never a hub query for it), a corpus without kept rows, and GRPO
    rollout settings this launch cannot run (a weight sync that needs a GPU, on a machine without one)."""
    out = Path(config.output_dir)
    to_run = [stage for stage in config.stages if not (out / stage / "final").is_dir()]
    if to_run and not (out / "sft" / "final").is_dir() and (problem := missing_model(config.model)):
        raise UserError(problem)
    if to_run:
        load_corpus(config.corpus, config.data)
    if "grpo" in to_run and config.grpo.rollout == "vllm":
        from training.grpo import check_rollout_settings

        check_rollout_settings(config.grpo)


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    from training.rollout import RolloutServerError

    with user_errors(show=is_main_process()):  # under torchrun: one line, from rank 0
        config = read_config(args.config, overrides)
        check_inputs(config)
        try:
            results = run(config)
        except RolloutServerError as err:
            raise SystemExit(f"error: {err}") from None
    say("summary: " + "; ".join(f"{stage} -> {path}" for stage, path in results.items()))


if __name__ == "__main__":
    main()
