"""The paper's prompts (AVRT appendix A.2) and the student prompt, as text files.

A new teacher brings its own prompt file here (or anywhere: configs may point at a path).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

PROMPT_DIR = Path(str(files(__name__)))
STUDENT_PROMPT = "student"  # the AVRT student's prompt (recipes name their own: echoink_r1, omni_r1)


def prompt_path(name_or_path: str) -> Path:
    """A bare name (``vision_teacher``) is looked up here; anything else is a file path."""
    candidate = PROMPT_DIR / f"{name_or_path}.txt"
    return candidate if candidate.exists() else Path(name_or_path)


def load_prompt(name_or_path: str) -> str:
    """The prompt text, without the file's trailing newline."""
    return prompt_path(name_or_path).read_text(encoding="utf-8").rstrip("\n")


def prompt_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
