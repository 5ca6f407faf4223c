"""Corpus statistics (the paper's Tables 2 and 7), a funnel plot, and the console summary."""

from __future__ import annotations

import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corpus.schema import STAGES, Row
from filters.format import check_format
from filters.policies import is_right
from media.files import atomic_write_bytes


def mean_std(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "std": 0.0, "n": 0}
    return {"mean": round(statistics.fmean(values), 2),
            "std": round(statistics.pstdev(values), 2) if len(values) > 1 else 0.0, "n": len(values)}


def reason_kind(reason: str) -> str:
    """The reason without its per-sample details: 'vision teacher wrong (said B, gold C)' -> 'vision teacher wrong'."""
    return reason.split(" (")[0].split(": ")[0].strip() or "unknown"


def funnel(rows: list[Row], pending: int = 0) -> dict[str, int]:
    """Samples read (``input``: decided rows and ``pending`` samples, the latter listed when there are
    any), then the decided ones remaining after each stage."""
    remaining = len(rows)
    out = {"input": remaining + pending, **({"pending": pending} if pending else {})}
    dropped = Counter(r["stage"] for r in rows if r["status"] == "rejected")
    for stage in STAGES:
        remaining -= dropped.get(stage, 0)
        out[f"after_{stage}"] = remaining
    return out


def compute_stats(rows: list[Row], count_tokens: Callable[[str], int] | None = None,
                  token_unit: str = "words", pending: int = 0) -> dict[str, Any]:
    """Pure statistics over all rows (kept and rejected) of a run; ``pending`` samples (read, not yet
    decided) count in the funnel's input."""
    count = count_tokens or (lambda text: len(text.split()))
    kept = [r for r in rows if r["status"] == "kept"]
    samples = [r for r in rows if r["stage"] != "manifest"]  # invalid manifest rows have no answer or type
    splits = sorted({r["split"] for r in rows})
    per_split = {}
    for split in splits:
        subset = [r for r in rows if r["split"] == split]
        per_split[split] = {"funnel": funnel(subset), "kept": sum(r["status"] == "kept" for r in subset)}

    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        if r["status"] == "rejected":
            reasons[r["stage"]][reason_kind(r["reason"])] += 1

    teachers = {}
    for role in ("vision", "audio"):
        asked = [r for r in rows if f"{role}_answer" in r and f"{role}_raw" in r]
        correct = sum(is_right(r["answer"], r[f"{role}_answer"]) for r in asked)
        answered = sum(r[f"{role}_answer"] is not None for r in asked)
        teachers[role] = {"asked": len(asked), "answered": answered, "correct": correct,
                          "accuracy": round(correct / len(asked), 4) if asked else None,
                          "no_answer_rate": round(1 - answered / len(asked), 4) if asked else None}
    both = [r for r in rows if r.get("vision_answer") is not None and r.get("audio_answer") is not None]
    agree = sum(r["vision_answer"] == r["audio_answer"] for r in both)
    both_right = sum(is_right(r["answer"], r.get("vision_answer")) and is_right(r["answer"], r.get("audio_answer"))
                     for r in rows if "vision_raw" in r and "audio_raw" in r)

    checks = [check_format(r["merged"], len(r["choices"])) for r in kept]
    think_lengths = [count(c.think) for c in checks]  # tokenizing is the costly part: once per row
    answers = [count(c.letter or "") for c in checks]
    compliant = sum(c.ok for c in checks)
    per_split_kept = {s: {"think_length": mean_std([n for r, n in zip(kept, think_lengths) if r["split"] == s]),
                          "duration_s": mean_std([r["duration"] for r in kept if r["split"] == s])} for s in splits}
    return {
        "samples_in": len(rows),
        "samples_kept": len(kept),
        "funnel": funnel(rows, pending),
        "splits": per_split,
        "dropped_by_stage": {s: sum(reasons[s].values()) for s in STAGES if reasons.get(s)},
        "reasons": {s: dict(reasons[s].most_common()) for s in STAGES if reasons.get(s)},
        "teachers": teachers,
        "teacher_agreement": {"both_answered": len(both), "agree": agree,
                              "rate": round(agree / len(both), 4) if both else None, "both_correct": both_right},
        "format_compliance": round(compliant / len(kept), 4) if kept else None,
        "token_unit": token_unit,
        "think_length": mean_std(think_lengths),
        "answer_length": mean_std(answers),
        "per_split_kept": per_split_kept,
        "answer_letters": {"input": dict(sorted(Counter(r["answer"] for r in samples).items())),
                           "kept": dict(sorted(Counter(r["answer"] for r in kept).items()))},
        "question_types": {"input": dict(Counter(r["question_type"] for r in samples).most_common()),
                           "kept": dict(Counter(r["question_type"] for r in kept).most_common())},
        "resolutions": dict(Counter(r.get("resolution") for r in kept if r.get("resolution")).most_common(5)),
        "merger_kinds": dict(Counter(r.get("merger_kind") for r in kept)),
    }


def token_counter(tokenizer_path: str | None) -> tuple[Callable[[str], int] | None, str]:
    """A student-token counter from a local tokenizer, or None (whitespace words) if unavailable."""
    if not tokenizer_path:
        return None, "words"
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except Exception:  # offline or missing: fall back to words, and say so in the stats
        return None, "words"
    return (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), f"tokens ({tokenizer_path})"


def plot_stats(stats: dict[str, Any], path: Path) -> Path:
    """One PNG: the stage funnel, answer letters in/kept, and question types kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(stats["funnel"])
    axes[0].bar(range(len(names)), list(stats["funnel"].values()), color="#4c72b0")
    axes[0].set_xticks(range(len(names)), [n.replace("after_", "") for n in names], rotation=30, ha="right")
    axes[0].set_title("samples remaining after each stage")
    letters = sorted(set(stats["answer_letters"]["input"]) | set(stats["answer_letters"]["kept"]))
    width = 0.4
    axes[1].bar([i - width / 2 for i in range(len(letters))], [stats["answer_letters"]["input"].get(l, 0) for l in letters], width, label="input")
    axes[1].bar([i + width / 2 for i in range(len(letters))], [stats["answer_letters"]["kept"].get(l, 0) for l in letters], width, label="kept")
    axes[1].set_xticks(range(len(letters)), letters)
    axes[1].legend()
    axes[1].set_title("gold answer letters")
    types = stats["question_types"]["input"]
    axes[2].barh(list(types), [stats["question_types"]["kept"].get(t, 0) for t in types], color="#55a868", label="kept")
    axes[2].barh(list(types), list(types.values()), color="none", edgecolor="black", label="input")
    axes[2].legend()
    axes[2].set_title("question types")
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def summary_text(stats: dict[str, Any], cache: dict[str, dict[str, int]], calls: dict[str, int], outdir: Path) -> str:
    """The closing console summary: what went in, what was kept at each stage, why the rest was not."""
    pending = stats.get("pending") or {"samples": 0, "reasons": {}}
    lines = []
    if stats.get("stopped"):
        lines += [f"build-avrt STOPPED: {stats['stopped']}", ""]
    lines += [f"build-avrt: {stats['samples_in']} samples decided, {stats['samples_kept']} kept, "
              f"{pending['samples']} pending -> {outdir}"]
    if pending["samples"]:
        lines += ["  pending (not rejected; the same command again retries only these): "
                  + "; ".join(f"{n} {reason}" for reason, n in pending["reasons"].items())]
        if pending.get("corpus_left_unchanged"):
            lines.append("  corpus/ left unchanged: some of its kept rows are among the pending samples")
    lines += ["", "stage funnel:"]
    for name, value in stats["funnel"].items():
        lines.append(f"  {name:<22} {value:>7}")
    if stats["reasons"]:
        lines += ["", "dropped, by stage and reason:"]
        for stage, reasons in stats["reasons"].items():
            for reason, n in reasons.items():
                lines.append(f"  {stage:<15} {n:>6}  {reason}")
    t = stats["teachers"]
    lines += ["", f"teacher accuracy: vision {t['vision']['accuracy']}, audio {t['audio']['accuracy']}; "
                  f"agreement {stats['teacher_agreement']['rate']}; format compliance {stats['format_compliance']}",
              f"think length ({stats['token_unit']}): {stats['think_length']['mean']} ± {stats['think_length']['std']}"]
    return "\n".join(lines + cache_lines(cache, calls))


def cache_lines(cache: dict[str, dict[str, int]], calls: dict[str, int]) -> list[str]:
    """The summary's last lines: cache hits and misses per namespace, and the model calls sent."""
    lines = ["", "cache (hits / misses) and model calls sent:"]
    for name, value in sorted(cache.items()):
        lines.append(f"  {name:<15} {value['hits']:>6} / {value['misses']:<6}")
    lines.append("  calls sent: " + (", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"))
    return lines
