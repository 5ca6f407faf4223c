"""``--dry-run``: what a training run would use, shown before any GPU hour is spent.

The resolved config, the rows ``data.path`` gives (and those left out, with their reasons), and the
first row's prompt exactly as the student receives it: the chat template applied and the media
expanded into their placeholder tokens, each run of one placeholder shown once with its count
(``<|AUDIO|>×250``; a single token as it is). Only the processor is loaded, never the weights.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import yaml

from student.inputs import encode_prompt, generation_suppress_tokens
from training.data import load_rows, media_loader
from training.runtime import load_processor
from training.train_config import TrainConfig

MAX_LISTED = 20  # rows left out, spelled out; the count is always exact


def media_token_counts(processor, input_ids: Sequence[int]) -> dict[str, int]:
    """How many of each multimodal special token the prompt holds (0s left out)."""
    ids = generation_suppress_tokens(processor)
    names = dict(zip(ids, processor.tokenizer.convert_ids_to_tokens(ids)))
    return dict(Counter(names[i] for i in input_ids if i in names))


def render_prompt(processor, input_ids: Sequence[int]) -> str:
    """The prompt's text with each run of one media placeholder written once with its length."""
    text = processor.tokenizer.decode(list(input_ids), skip_special_tokens=False)
    for token in sorted(media_token_counts(processor, input_ids), key=len, reverse=True):
        text = re.sub(f"(?:{re.escape(token)}){{2,}}", lambda m, t=token: f"{t}×{len(m.group(0)) // len(t)}", text)
    return text


def first_prompt_ids(config: TrainConfig, processor, row: dict) -> list[int]:
    """The token ids of ``row``'s prompt as the trainer builds it (its media loader, system turn, layout)."""
    sample = media_loader(config)(row)
    return encode_prompt(processor, sample, config.system_prompt, config.av_layout)["input_ids"].tolist()


def report(config: TrainConfig, model_path: str) -> str:
    """The dry run's text (see the module docstring)."""
    rows = load_rows(config.data)
    lines = ["# resolved config", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(), "",
             f"# data: {config.data.path} ({rows.kind}, split {config.data.split!r})",
             f"rows: {len(rows.frame)} to train on, {len(rows.rejected)} left out"]
    lines += [f"  left out: {row}" for row in rows.rejected[:MAX_LISTED]]
    if len(rows.rejected) > MAX_LISTED:
        lines.append(f"  … and {len(rows.rejected) - MAX_LISTED} more")
    processor = load_processor(model_path)
    first = rows.frame.iloc[0].to_dict()
    ids = first_prompt_ids(config, processor, first)
    counts = media_token_counts(processor, ids)
    media = ", ".join(f"{token} ×{n}" for token, n in counts.items()) or "none (text only)"
    lines += ["", f"# first prompt (row {first['id']!r}; {len(ids)} tokens; media tokens: {media})",
              render_prompt(processor, ids)]
    return "\n".join(lines)
