"""build-questions' command line, importable without Prefect (so ``--help`` is instant)."""

from __future__ import annotations

import argparse
from typing import Any

from flows.build_args import set_overrides

DESCRIPTION = """build-questions: multiple-choice questions for clips that have none, as a Prefect flow.

Omni-R1's recipe (section III-C): an audio captioner describes each clip's 10 s of audio (and, with
question_kind audio_visual, a vision captioner its 8 frames); a text LLM writes questions from the
captions as JSON (one correct answer, three similar but wrong); the code checks each question and
places the correct answer at a seeded position; an optional blind solver drops questions it answers
from their text alone. The questions are written as a manifest that build-avrt reads (--manifest).

    python -m flows.build_questions --config configs/build/questions.yaml --clips clips/ --out outputs/questions

--clips: a folder of videos or audio files, or a JSONL of {"id", "video" | "audio"}.
--captions: captions already made (AudioSetCaps' CSV, or a JSONL of {"id", "caption"}): the audio
captioner is not asked, and only the clips with a caption are used.

Outputs under --out: manifest.jsonl (one row per kept question), rejected/clips.jsonl and
rejected/questions.jsonl (with stage and reason), stats.json, stats.png, README.md (dataset card),
media/ or cache/, work/shards/ (per-clip checkpoints). Every model call and extraction is cached by
content: a re-run repeats no finished work, and a new question writer asks only the writer again.

A clip whose calls failed for transport reasons (timeouts, connection errors, 429, 5xx) is left
pending, never rejected; an endpoint that cannot serve stops the run. Either way the command exits
with status 3: run the same command again to finish. One run per --out at a time; clips that would drop
questions of --out's manifest need --replace.

Exit status: 0 done; 2 refused (bad config or clips, --out busy, questions would be dropped); 3 finished
with pending clips.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.build_questions", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config YAML (audio_captioner, question_writer, ...)")
    parser.add_argument("--clips", required=True, help="folder of videos or audio files, or a JSONL of {id, video|audio}")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--captions", help="captions already made: AudioSetCaps' CSV or a JSONL of {id, caption}")
    parser.add_argument("--limit", type=int, help="process only the first N clips")
    parser.add_argument("--replace", action="store_true",
                        help="allow replacing --out's manifest when these clips do not cover every clip it holds")
    parser.add_argument("--question-kind", choices=["audio", "audio_visual"], help="overrides the config's question_kind")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, dotted, e.g. --set question_writer.temperature=0.5 (repeatable)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    kind = {"question_kind": args.question_kind} if args.question_kind else {}
    return {**kind, **set_overrides(args.set)}
