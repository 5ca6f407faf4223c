"""Export a trained student (a Qwen2.5-Omni or Qwen3-Omni *thinker* checkpoint) as a full-model checkpoint.

    python -m evaluation.export_student --model outputs/train/avrt/grpo/final --out outputs/export/avrt-3b

Writes the published full-model layout that vLLM and lmms-eval load (``student.export``: the full
config around the thinker's, no talker, every weight renamed ``thinker.<name>``, the processor,
tokenizer, chat template and generation config copied, and Qwen2.5-Omni's ``spk_dict.pt``).
Serving and benchmark commands for the export: docs/evaluation.md (vLLM, lmms-eval) and docs/serving.md
("Serving the student").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from configs import user_errors
from student.export import DTYPES, SPEAKERS, export_student, weight_files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.export_student", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="the trained thinker checkpoint directory")
    parser.add_argument("--out", required=True, type=Path, help="directory for the full-model checkpoint")
    parser.add_argument("--dtype", default="keep", choices=DTYPES, help="cast floating weights (default: keep)")
    parser.add_argument("--speakers-from", type=Path, default=None,
                        help=f"Qwen2.5-Omni: a released checkpoint dir whose {SPEAKERS} to copy "
                             "(default: speaker names without voice data; text output only)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with user_errors():
        out = export_student(args.model, args.out, args.dtype, args.speakers_from)
    shards, _ = weight_files(out)
    architecture = json.loads((out / "config.json").read_text())["architectures"][0]
    print(f"exported {args.model} -> {out} ({len(shards)} shard(s), architecture {architecture}); "
          f"serve with: .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model {out} (docs/serving.md)")


if __name__ == "__main__":
    main()
