"""Helpers for pipeline tests: a manifest with numbered questions and a scripted 'plan' of answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.scripted_server import Reply

QUESTION = re.compile(r"Q(\d+):")


def numbered_manifest(source: Path, out: Path, n: int | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Copy the synthetic manifest with questions prefixed 'Q{i}:' so a scripted server can tell them apart."""
    rows = [json.loads(l) for l in (source / "manifest.jsonl").read_text().splitlines()][:n]
    for i, row in enumerate(rows):
        row["question"] = f"Q{i}: {row['question']}"
        row["video"] = str(source / row["video"])
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def question_index(request: dict[str, Any]) -> int:
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return int(QUESTION.search(text).group(1))


def teacher_handler(answers: dict[int, str]):
    """Answer question i with ``answers[i]`` (a letter, or any text)."""

    def handle(request: dict[str, Any]) -> Reply:
        said = answers[question_index(request)]
        text = f"Answer: ({said})" if len(said) == 1 else said
        return Reply(content=text, reasoning=f"I looked carefully at question {question_index(request)}.")

    return handle


def merger_handler(bad_first: set[int] = frozenset()):
    """A merger that writes a valid trace with the gold letter; leaks the answer first for ``bad_first``."""
    attempts: dict[int, int] = {}

    def handle(request: dict[str, Any]) -> Reply:
        text = request["messages"][-1]["content"]
        i = question_index(request)
        gold = re.search(r"Correct Answer:\s*\(?([A-D])", text).group(1)
        attempts[i] = attempts.get(i, 0) + 1
        if i in bad_first and attempts[i] == 1:
            return Reply(f"<think>The correct answer is {gold}, I was told.</think><answer>{gold}</answer>")
        return Reply(f"<think>The sound and the picture agree on question {i}.</think><answer>{gold}</answer>")

    return handle


def write_config(path: Path, url: str, **extra: Any) -> Path:
    def endpoint(model: str, prompt: str) -> dict[str, Any]:
        return {"model": model, "base_url": url, "prompt": prompt, "temperature": 0.0, "max_tokens": 64,
                "timeout_s": 5, "retries": 2, "backoff_s": 0.05, "max_in_flight": 8}  # retries without the wait

    config = {"vision_teacher": endpoint("vision", "vision_teacher"), "audio_teacher": endpoint("audio", "audio_teacher"),
              "merger": endpoint("merger", "merger"), "media": {"max_side": 160}, "shard_size": 3,
              "max_concurrent_shards": 2, **extra}
    path.write_text(yaml.safe_dump(config))
    return path
