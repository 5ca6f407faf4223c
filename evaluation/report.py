"""Evaluation reports: exact and official accuracy overall, per category / tag / difficulty, per
modality setting, with unscorable ids and the items where the two rules disagree.

Exact accuracy counts scorable rows (``correct`` is None when the published answer is not an
option); official accuracy counts every row, as the benchmark's own scorer does.

Pure functions over prediction rows (the JSONL that ``evaluation.evaluate`` writes):
``summarize(rows, difficulty) -> dict`` and ``render_markdown(report) -> str``.

Difficulty (the paper's Table 6): a question is *easy* when both teachers answered it right,
*medium* when one did, *hard* when none did. ``load_difficulty`` reads teacher results from a
build-avrt output directory (``corpus/*.parquet`` and ``rejected/*.parquet``), a parquet file, or a
JSONL/JSON file; rows need ``id``, ``vision_answer``, ``audio_answer`` and ``answer`` (gold letter).
A missing teacher answer counts as wrong; a row where neither teacher was asked (both raw outputs
absent) is skipped.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filters.policies import is_right

DIFFICULTIES = ("easy", "medium", "hard")


# ---------------------------------------------------------------- difficulty

def difficulty_of(vision_answer: Any, audio_answer: Any, answer: Any) -> str:
    """easy: both teachers right; medium: one; hard: neither (``filters.policies.is_right``)."""
    return DIFFICULTIES[2 - sum(is_right(answer, a) for a in (vision_answer, audio_answer))]


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(str(value).strip())


def _teacher_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    from corpus.store import parquet_files, read_rows

    if path.is_dir():
        if parquet_files(path):
            return read_rows(path)
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path}: no corpus/*.parquet or rejected/*.parquet")
        return [row for f in files for row in pd.read_parquet(f).to_dict(orient="records")]
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(json.loads(text))


def load_difficulty(path: str | Path) -> dict[str, str]:
    """``{id: "easy"|"medium"|"hard"}`` from teacher results (see module docstring)."""
    out: dict[str, str] = {}
    for row in _teacher_rows(Path(path)):
        if "id" not in row or "answer" not in row:
            raise ValueError(f"{path}: teacher rows need 'id' and 'answer' (got {sorted(row)[:8]})")
        raws = [row.get("vision_raw"), row.get("audio_raw")]
        if ("vision_raw" in row or "audio_raw" in row) and not any(_present(r) for r in raws) \
                and not any(_present(row.get(k)) for k in ("vision_answer", "audio_answer")):
            continue  # teachers never saw this sample (e.g. a media error)
        out[str(row["id"])] = difficulty_of(row.get("vision_answer"), row.get("audio_answer"), row["answer"])
    return out


# ---------------------------------------------------------------- summary

def _bucket(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Exact accuracy over the scorable rows, official accuracy over all rows (as the official scorer)."""
    n = len(rows)
    scorable = [r for r in rows if r.get("correct") is not None]
    correct = sum(1 for r in scorable if r["correct"])
    official = sum(1 for r in rows if r.get("correct_official", r.get("correct")))
    return {"n": n, "scorable": len(scorable), "correct": correct,
            "accuracy": round(correct / len(scorable), 4) if scorable else None,
            "correct_official": official, "accuracy_official": round(official / n, 4) if n else None}


def _grouped(rows: Sequence[Mapping[str, Any]], key) -> dict[str, Any]:
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[str(key(row))].append(row)
    return {name: _bucket(group) for name, group in sorted(groups.items())}


def _reason(row: Mapping[str, Any]) -> str:
    """The parser's reason without its quoted excerpt ("no answer found (text ends ...)")."""
    return str(row.get("parse_reason") or "?").split(" (", 1)[0].split(":", 1)[0].strip()


def _disagreement(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "exact": row.get("correct"), "official": row.get("correct_official"),
            "gold": row.get("gold"), "gold_text": row.get("gold_text"), "letter": row.get("letter"),
            "official_prediction": row.get("prediction")}


def summarize_setting(rows: Sequence[Mapping[str, Any]], difficulty: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Metrics for the rows of one modality setting."""
    summary = _bucket(rows)
    errors = [r for r in rows if r.get("error")]
    answered = [r for r in rows if not r.get("error")]
    failures = [r for r in answered if not r.get("letter")]
    unscorable = [r for r in rows if r.get("correct") is None]
    generation = [r for r in errors if str(r["error"]).startswith("generation:")]
    summary.update({
        "media_errors": len(errors) - len(generation),
        "generation_errors": len(generation),
        "all_failed": bool(rows) and len(errors) == len(rows),
        "accuracy_excluding_media_errors": _bucket(answered)["accuracy"],
        "parse_failures": len(failures),
        "parse_failure_rate": round(len(failures) / len(answered), 4) if answered else None,
        "parse_failure_reasons": dict(Counter(_reason(r) for r in failures).most_common()),
        "unscorable": len(unscorable),
        "unscorable_ids": [str(r["id"]) for r in unscorable],
        "disagreements": [_disagreement(r) for r in answered
                          if r.get("correct") is not None and "correct_official" in r
                          and bool(r["correct"]) != bool(r["correct_official"])],
        "per_category": _grouped(rows, lambda r: r.get("category") or "(none)"),
    })
    tag_names = sorted({k for r in rows for k in (r.get("tags") or {})})
    summary["per_tag"] = {name: _grouped(rows, lambda r, n=name: (r.get("tags") or {}).get(n, "(none)"))
                          for name in tag_names}
    if difficulty is not None:
        per = _grouped(rows, lambda r: difficulty.get(str(r["id"]), "unknown"))
        summary["per_difficulty"] = {k: per[k] for k in (*DIFFICULTIES, "unknown") if k in per}
    return summary


def summarize(rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any], difficulty: Mapping[str, str] | None = None,
              difficulty_source: str | None = None) -> dict[str, Any]:
    """The full report: ``meta`` (benchmark, model, decoding...) plus one summary per modality setting."""
    rows = list(rows)
    by_setting: dict[str, list] = defaultdict(list)
    for row in rows:
        by_setting[row["modality"]].append(row)
    report: dict[str, Any] = dict(meta)
    report["settings"] = {m: summarize_setting(by_setting[m], difficulty) for m in sorted(by_setting, key=_order)}
    if difficulty is not None:
        ids = {str(r["id"]) for r in rows}
        report["difficulty"] = {"source": difficulty_source, "matched": len(ids & difficulty.keys()),
                                "unmatched": len(ids - difficulty.keys()),
                                "counts": dict(Counter(difficulty[i] for i in ids if i in difficulty))}
    return report


def _order(setting: str) -> tuple[int, str]:
    return ({"av": 0, "a": 1, "v": 2, "t": 3}.get(setting, 4), setting)


# ---------------------------------------------------------------- markdown

def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


_SETTING_NAMES = {"av": "audio + visual", "a": "audio only", "v": "visual only", "t": "text only"}


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable Markdown version of ``summarize``'s report."""
    lines = [f"# Evaluation: {report.get('benchmark')}", ""]
    for key in ("model", "backend", "data", "n_items", "scoring", "prompt", "media", "decoding", "created"):
        if key in report:
            value = report[key]
            value = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
            lines.append(f"- **{key}**: `{value}`" if key in ("model", "backend", "data", "decoding", "media")
                         else f"- **{key}**: {value}")
    settings = report.get("settings", {})
    failed = [name for name, s in settings.items() if s.get("all_failed")]
    if failed:
        lines += ["", f"**NOT A RESULT: every item failed in {', '.join(failed)} (media or generation errors).**"]
    lines += ["", "## Accuracy per modality setting", "",
              "Exact: the chosen option is the gold option, over scorable items. Official: the benchmark's own "
              "rule, over all items.", "",
              "| setting | n | exact % | official % | acc. excl. errors % | parse failures % | media errors "
              "| generation errors | unscorable | disagree |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in settings.items():
        lines.append(f"| {name} ({_SETTING_NAMES.get(name, name)}) | {s['n']} | {_pct(s['accuracy'])} | "
                     f"{_pct(s.get('accuracy_official'))} | {_pct(s['accuracy_excluding_media_errors'])} | "
                     f"{_pct(s['parse_failure_rate'])} | {s['media_errors']} | {s.get('generation_errors', 0)} | "
                     f"{s.get('unscorable', 0)} | "
                     f"{len(s.get('disagreements', []))} |")
    lines += _table("category", {n: s["per_category"] for n, s in settings.items()})
    tag_names = sorted({t for s in settings.values() for t in s.get("per_tag", {})})
    for tag in tag_names:
        lines += _table(tag, {n: s.get("per_tag", {}).get(tag, {}) for n, s in settings.items()})
    if "difficulty" in report:
        d = report["difficulty"]
        lines += ["", f"Difficulty from `{d['source']}`: {d['matched']} items matched, {d['unmatched']} unmatched."]
        lines += _table("difficulty", {n: s.get("per_difficulty", {}) for n, s in settings.items()})
    lines += _item_lists(settings)
    reasons = {n: s["parse_failure_reasons"] for n, s in settings.items() if s["parse_failure_reasons"]}
    if reasons:
        lines += ["", "## Parse failures", ""]
        for name, counts in reasons.items():
            lines.append(f"- {name}: " + ", ".join(f"{reason} ({count})" for reason, count in counts.items()))
    return "\n".join(lines) + "\n"


MAX_LISTED = 50  # items listed per setting in report.md (report.json lists all)


def _item_lists(settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Unscorable ids and exact/official disagreements, per setting."""
    lines: list[str] = []
    for name, s in settings.items():
        if s.get("unscorable_ids"):
            ids = s["unscorable_ids"]
            more = f" … and {len(ids) - MAX_LISTED} more (report.json)" if len(ids) > MAX_LISTED else ""
            lines += ["", f"## Unscorable items ({name}): published answer not among the options", "",
                      ", ".join(f"`{i}`" for i in ids[:MAX_LISTED]) + more]
        if s.get("disagreements"):
            rows = s["disagreements"]
            lines += ["", f"## Exact vs official disagreements ({name}): {len(rows)}", "",
                      "| id | gold | chosen | exact | official | official compared |", "|---|---|---|---|---|---|"]
            for d in rows[:MAX_LISTED]:
                lines.append(f"| `{d['id']}` | {d['gold']} ({_cell(d['gold_text'])}) | {d['letter'] or '-'} | "
                             f"{'right' if d['exact'] else 'wrong'} | {'right' if d['official'] else 'wrong'} | "
                             f"{_cell(d['official_prediction'])} |")
            if len(rows) > MAX_LISTED:
                lines.append(f"| … {len(rows) - MAX_LISTED} more in report.json | | | | | |")
    return lines


def _cell(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")[:60]


def _table(title: str, per_setting: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    settings = list(per_setting)
    groups = sorted({g for buckets in per_setting.values() for g in buckets},
                    key=lambda g: (DIFFICULTIES.index(g) if g in DIFFICULTIES else 9, g))
    if not groups:
        return []
    lines = ["", f"## Accuracy per {title} (%, n)", "",
             "| " + title + " | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for group in groups:
        cells = []
        for s in settings:
            b = per_setting[s].get(group)
            cells.append(f"{_pct(b['accuracy'])} ({b['n']})" if b else "")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines
