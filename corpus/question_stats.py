"""build-questions' statistics (clips and questions per stage and reason, the answer-letter balance,
question lengths), its plot and its console summary; the rows are ``flows.question_stages``'."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from corpus.stats import cache_lines, mean_std, reason_kind, save_figure
from filters.answers import LETTERS
from filters.questions import N_OPTIONS

CLIP_STAGES = ("media", "audio_captioner", "vision_captioner", "question_writer")  # where a clip can be dropped whole
QUESTION_STAGES = ("checks", "blind_solver")  # where a written question can be dropped


def question_stats(rows: list[dict[str, Any]], pending: int = 0) -> dict[str, Any]:
    """Pure statistics over every decided clip row of a run; ``pending`` clips count in the input."""
    written = [q for r in rows for q in [*r.get("questions", []), *r.get("dropped_questions", [])]]
    kept = [q for r in rows for q in r.get("questions", [])]
    clip_reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        if r["status"] == "rejected" and r["stage"] in CLIP_STAGES:
            clip_reasons[r["stage"]][reason_kind(r["reason"])] += 1
    question_reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for q in written:
        if "reason" in q:
            question_reasons[q["stage"]][reason_kind(q["reason"])] += 1
    remaining, clip_funnel = len(rows), {"input": len(rows) + pending, **({"pending": pending} if pending else {})}
    for stage in CLIP_STAGES:
        remaining -= sum(clip_reasons[stage].values())
        clip_funnel[f"after_{stage}"] = remaining
    clip_funnel["with_questions"] = sum(r["status"] == "kept" for r in rows)
    left, question_funnel = len(written), {"written": len(written)}
    for stage in QUESTION_STAGES:
        left -= sum(question_reasons[stage].values())
        question_funnel[f"after_{stage}"] = left
    letters = Counter(q["answer"] for q in kept)
    blind = [q for q in written if "blind_answer" in q]
    return {
        "clips_in": len(rows) + pending, "clips_decided": len(rows), "clips_with_questions": clip_funnel["with_questions"],
        "questions_written": len(written), "questions_kept": len(kept),
        "clip_funnel": clip_funnel, "question_funnel": question_funnel,
        "clip_reasons": {s: dict(clip_reasons[s].most_common()) for s in CLIP_STAGES if clip_reasons.get(s)},
        "question_reasons": {s: dict(question_reasons[s].most_common()) for s in QUESTION_STAGES if question_reasons.get(s)},
        "answer_letters": {letter: letters.get(letter, 0) for letter in LETTERS[:N_OPTIONS]},
        "question_words": mean_std([len(q["question"].split()) for q in kept]),
        "option_words": mean_std([len(c.split()) for q in kept for c in q["choices"]]),
        "blind_solver": {"asked": len(blind), "right": sum(q["blind_answer"] == q["answer"] for q in blind)},
    }


def plot_question_stats(stats: dict[str, Any], lengths: list[int], path: Path) -> Path:
    """One PNG: clips and questions remaining after each stage, the answer letters, the question lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    funnel = {**{f"clips {k}": v for k, v in stats["clip_funnel"].items()},
              **{f"questions {k}": v for k, v in stats["question_funnel"].items()}}
    axes[0].bar(range(len(funnel)), list(funnel.values()), color="#4c72b0")
    axes[0].set_xticks(range(len(funnel)), [n.replace("after_", "") for n in funnel], rotation=35, ha="right")
    axes[0].set_title("remaining after each stage")
    axes[1].bar(list(stats["answer_letters"]), list(stats["answer_letters"].values()), color="#55a868")
    axes[1].set_title("answer letters (kept questions)")
    axes[2].hist(lengths or [0], bins=20, color="#c44e52")
    axes[2].set_title("question length (words, kept)")
    return save_figure(fig, path)


def question_summary(stats: dict[str, Any], cache: dict[str, dict[str, int]], calls: dict[str, int], outdir: Path) -> str:
    """The closing console summary of build-questions."""
    pending = stats.get("pending") or {"samples": 0, "reasons": {}}
    lines = [f"build-questions STOPPED: {stats['stopped']}", ""] if stats.get("stopped") else []
    lines += [f"build-questions: {stats['clips_decided']} clips decided, {stats['clips_with_questions']} with questions, "
              f"{pending['samples']} pending; {stats['questions_kept']} of {stats['questions_written']} questions kept "
              f"-> {outdir / 'manifest.jsonl'}"]
    if pending["samples"]:
        lines.append("  pending (not rejected; the same command again retries only these): "
                     + "; ".join(f"{n} {reason}" for reason, n in pending["reasons"].items()))
    lines += ["", "clips:"] + [f"  {k:<26} {v:>7}" for k, v in stats["clip_funnel"].items()]
    lines += ["questions:"] + [f"  {k:<26} {v:>7}" for k, v in stats["question_funnel"].items()]
    dropped = [(s, r, n) for part in ("clip_reasons", "question_reasons") for s, rs in stats[part].items() for r, n in rs.items()]
    if dropped:
        lines += ["", "dropped, by stage and reason:"] + [f"  {s:<17} {n:>6}  {r}" for s, r, n in dropped]
    letters = ", ".join(f"{k} {v}" for k, v in stats["answer_letters"].items())
    lines += ["", f"answer letters: {letters}; question length (words) {stats['question_words']['mean']} "
                  f"± {stats['question_words']['std']}"]
    return "\n".join(lines + cache_lines(cache, calls))
