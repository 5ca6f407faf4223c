"""What `make demo` prints at the end: the miniature of the paper's Table 4, from the demo's outputs.

``python -m demo.summary --corpus outputs/demo/corpus --base outputs/demo/eval-base
--trained outputs/demo/eval`` reads build-avrt's ``stats.json`` and rows, and the two evaluation
reports, and prints

* each teacher's accuracy (and how often its description names the clip's colour / pitch);
* how many samples the both-correct filter kept, with their answer letters;
* the merger's attempts and validation failures (attempts that did not pass ``merger.validate``);
* the student's accuracy before and after training in each modality setting (av, a, v), and whether
  it uses both modalities (``learned_both``).

Numbers only; nothing is recomputed that the reports already hold.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from corpus.store import read_rows
from demo.task import OPTIONS, properties

SETTINGS = ("av", "a", "v")
AV_THRESHOLD = 0.7  # a student given one modality is right at most about half the time on this task
DESCRIPTIONS = {"vision": "The screen is {colour}.", "audio": "The tone is {pitch}."}


def other_task_row(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first row that is not a question of the demo task (whose options are ``demo.task.OPTIONS``, the
    texts the figures read each clip's colour and pitch from), or None."""
    return next((row for row in rows if tuple(row["choices"]) != OPTIONS), None)


def description_hits(rows: list[dict[str, Any]], role: str) -> tuple[int, int]:
    """(answers whose description names the clip's true property, answers) for one teacher."""
    hits = asked = 0
    for row in rows:
        raw = row.get(f"{role}_raw")
        if not isinstance(raw, str):
            continue
        colour, pitch = properties(list(row["choices"]), row["answer"])
        asked += 1
        hits += DESCRIPTIONS[role].format(colour=colour, pitch=pitch) in raw
    return hits, asked


def merger_tally(rows: list[dict[str, Any]], attempts_per_sample: int, kind: str = "llm") -> dict[str, int]:
    """Merges attempted for the decided rows and how many of them failed validation: the merger's calls
    (``llm``), or one deterministic merge per sample (``concat``, which calls no model)."""
    kept = [r for r in rows if r["status"] == "kept"]
    failed_samples = sum(1 for r in rows if r["status"] == "rejected" and r.get("stage") == "merger")
    if kind == "concat":
        attempts = len(kept) + failed_samples
    else:
        attempts = sum(int(r.get("merger_attempts") or 0) for r in kept) + failed_samples * attempts_per_sample
    return {"samples": len(kept) + failed_samples, "attempts": attempts, "validation_failures": attempts - len(kept),
            "samples_dropped": failed_samples}


def accuracies(report: dict[str, Any]) -> dict[str, float | None]:
    """Setting -> exact accuracy from an evaluation ``report.json``."""
    settings = report.get("settings", {})
    return {s: settings.get(s, {}).get("accuracy") for s in SETTINGS}


def learned_both(after: dict[str, float | None], threshold: float = AV_THRESHOLD) -> bool:
    """Whether a student's accuracies show it uses both modalities: av clears ``threshold`` and beats
    a-only and v-only (a setting not evaluated counts as 0)."""
    av = after.get("av") or 0.0
    return av >= threshold and av > max(after.get("a") or 0.0, after.get("v") or 0.0)


def summary(corpus: Path, base: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """Everything the demo prints, as one dict."""
    stats = json.loads((corpus / "stats.json").read_text())
    config = json.loads((corpus / "config.resolved.json").read_text())
    rows = read_rows(corpus)
    kept = [r for r in rows if r["status"] == "kept"]
    return {
        "teachers": {role: {"accuracy": stats["teachers"][role]["accuracy"],
                            "descriptions_right": description_hits(rows, role)} for role in ("vision", "audio")},
        "filter": config["filter"], "samples_in": stats["samples_in"], "kept": stats["samples_kept"],
        "kept_answers": dict(sorted(Counter(r["answer"] for r in kept).items())),
        "merger": {**merger_tally(rows, int(config["merger_attempts"]), config["merger_kind"]),
                   "kind": config["merger_kind"]},
        "student": {"before": accuracies(base), "after": accuracies(trained)},
    }


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def render(result: dict[str, Any]) -> str:
    lines = []
    for role, t in result["teachers"].items():
        hits, asked = t["descriptions_right"]
        lines.append(f"{role} teacher accuracy: {t['accuracy']}  (description names the clip's "
                     f"{'colour' if role == 'vision' else 'pitch'}: {hits}/{asked})")
    m = result["merger"]
    lines += [f"filter '{result['filter']}': kept {result['kept']} of {result['samples_in']} samples "
              f"(answers {result['kept_answers']})",
              (f"merger: {m['attempts']} attempts for {m['samples']} samples" if m.get("kind", "llm") == "llm"
               else f"merger: {m['kind']} (no model calls) for {m['samples']} samples")
              + f", {m['validation_failures']} failed validation, {m['samples_dropped']} samples dropped",
              "", "student accuracy (test split)   av     a      v",
              "  before training (eval-base)  " + " ".join(_pct(result["student"]["before"][s]) for s in SETTINGS),
              "  after SFT + GRPO (eval)      " + " ".join(_pct(result["student"]["after"][s]) for s in SETTINGS),
              "the trained student " + ("uses" if learned_both(result["student"]["after"]) else "does not use")
              + f" both modalities (needs av >= {AV_THRESHOLD:.2f} and above a and v)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="build-avrt output folder")
    parser.add_argument("--base", type=Path, required=True, help="evaluation folder of the untrained student")
    parser.add_argument("--trained", type=Path, required=True, help="evaluation folder of the trained student")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = summary(args.corpus, *(json.loads((p / "report.json").read_text()) for p in (args.base, args.trained)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(render(result))


if __name__ == "__main__":
    main()
