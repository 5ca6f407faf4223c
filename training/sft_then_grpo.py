"""Train the audio-visual student: SFT cold start on the merged traces, then GRPO (AVRT 3.2, 4.2), or
any recipe of ``configs/recipes/`` (EchoInk-R1, Omni-R1: GRPO only; docs/recipes.md).

    python -m training.sft_then_grpo --config configs/recipes/NAME.yaml [--stages sft,grpo]
        [--model PATH_OR_ID] [--data PATH] [--output-dir DIR] [--skip-invalid] [--dry-run] [key=value ...]

Reads ``--data`` (``data.path``; ``--corpus`` is its old name): a build-avrt output folder
(``OUTDIR/corpus/*.parquet``), or a dataset as published (an AVQA-R1-6K split folder, R1-AQA's AVQA
JSONL, AVQA's annotation JSON, ARC-Easy, a build-questions folder); writes ``DIR/sft`` and ``DIR/grpo``, each
with ``checkpoint-N/``, ``final/`` (model + processor + ``training_config.yaml``), ``config.yaml`` (resolved), ``metrics.jsonl``
and ``plots/*.png``. GRPO starts from ``DIR/sft/final`` when SFT ran (now or before), else from
``--model``. A stage whose ``final/`` exists is skipped; an interrupted stage resumes from its last
checkpoint. Overrides are dotted keys of ``training/train_config.py`` (``sft.max_steps=2``).
``--dry-run`` prints the resolved config, the rows found (and left out, with reasons) and the first
row's prompt as the student receives it, then exits without loading the weights.
A mistake in the command (an unknown key, a ``--model`` folder or ``--data`` without usable rows, a
setting this machine cannot run) stops it before any model loads: one line, exit status 2.
Multi-GPU / DeepSpeed: ``accelerate launch --config_file configs/accelerate/zero2_offload.yaml -m
training.sft_then_grpo …``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from configs import UserError, missing_model, user_errors
from training.train_config import SAVED_CONFIG, TrainConfig, dump_config, read_config

# torch, transformers and TRL are imported by the functions that need them: --help answers at once


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m training.sft_then_grpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config: a recipe of configs/recipes/ (avrt, echoink-r1, "
                                                    "omni-r1, omni-r1-text-only, omni-r1-arc-easy) or configs/train/")
    parser.add_argument("--stages", help="comma-separated: sft,grpo | sft | grpo")
    parser.add_argument("--model", help="base student: hub id or local directory")
    parser.add_argument("--data", help="training data: a build-avrt output folder, or a published dataset "
                                       "(docs/recipes.md)")
    parser.add_argument("--corpus", dest="data", help="the old name of --data")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="train on the usable rows of published data, listing the others, instead of stopping")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config, the rows found and the first prompt as the student "
                             "receives it; load no weights, train nothing")
    parser.add_argument("--output-dir", help="where the stage directories go")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. grpo.beta=0")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in (("model", "model"), ("data", "data.path"), ("output_dir", "output_dir")):
        if getattr(args, flag):
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.skip_invalid:
        overrides.append("data.skip_invalid=true")
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    return args, overrides


def run(config: TrainConfig) -> dict[str, Path]:
    """Run the configured stages; returns each stage's ``final`` directory."""
    from training.plots import plot_stage
    from training.runtime import is_main_process, say

    out = Path(config.output_dir)
    results: dict[str, Path] = {}
    model_path = config.model
    for stage in ("sft", "grpo"):
        stage_dir = out / stage
        if stage == "grpo":
            model_path = start_model(config)
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
            shutil.copyfile(stage_dir / "config.yaml", final / SAVED_CONFIG)  # evaluation asks the student as trained
            plots = plot_stage(stage, stage_dir)
            say(f"[{stage}] done in {time.monotonic() - started:.0f}s: model {final}; "
                f"plots {', '.join(p.name for p in plots)}")
        results[stage] = final
    return results


def start_model(config: TrainConfig) -> str:
    """Where GRPO starts: the SFT result when SFT ran (now or before), else ``model``."""
    sft_final = Path(config.output_dir) / "sft" / "final"
    return str(sft_final) if sft_final.is_dir() else config.model


def check_inputs(config: TrainConfig) -> None:
    """Refuse (``UserError``), before any model loads, what the run would otherwise fail on later: a base
    model folder that does not exist (never a hub query for it), data without usable rows (SFT: without
    traces), and GRPO
    rollout settings this launch cannot run (a weight sync that needs a GPU, on a machine without one)."""
    from training.data import load_rows

    out = Path(config.output_dir)
    to_run = [stage for stage in config.stages if not (out / stage / "final").is_dir()]
    if to_run and not (out / "sft" / "final").is_dir() and (problem := missing_model(config.model)):
        raise UserError(problem)
    if to_run:
        load_rows(config.data, extra_columns=(config.sft.target_column,) if "sft" in to_run else ())
    if "grpo" in to_run and config.grpo.rollout == "vllm":
        from training.grpo import check_rollout_settings

        check_rollout_settings(config.grpo)


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    from training.rollout import RolloutServerError
    from training.runtime import is_main_process, say

    with user_errors(show=is_main_process()):  # under torchrun: one line, from rank 0
        config = read_config(args.config, overrides)
        check_inputs(config)
        if args.dry_run:
            from training.dry_run import report

            print(report(config, start_model(config)))
            return
        try:
            results = run(config)
        except RolloutServerError as err:
            raise SystemExit(f"error: {err}") from None
    say("summary: " + "; ".join(f"{stage} -> {path}" for stage, path in results.items()))


if __name__ == "__main__":
    main()
