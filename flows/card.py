"""The dataset card (``OUTDIR/README.md``) written next to the corpus."""

from __future__ import annotations

import json
from typing import Any

from flows.config import BuildConfig
from flows.stages import ROLES, endpoint
from prompts import load_prompt, prompt_sha256


def dataset_card(stats: dict[str, Any], config: BuildConfig, splits: list[str]) -> str:
    data_files = "\n".join(f"  - split: {s}\n    path: corpus/{s}.parquet" for s in splits)
    teachers = "\n".join(
        f"| {role} | `{endpoint(config, role).model}` | `{endpoint(config, role).prompt}` "
        f"(sha256 {prompt_sha256(load_prompt(endpoint(config, role).prompt))[:12]}) | "
        f"`{json.dumps(endpoint(config, role).sampling())}` |"
        for role in ROLES
    )
    funnel = "\n".join(f"| {k} | {v} |" for k, v in stats["funnel"].items())
    reasons = "\n".join(f"| {stage} | {reason} | {n} |" for stage, rs in stats["reasons"].items() for reason, n in rs.items())
    t = stats["teachers"]
    return f"""---
configs:
- config_name: default
  data_files:
{data_files}
tags: [audio-visual, reasoning, distillation, avrt]
---
# AVRT corpus

Audio-visual multiple-choice samples with reasoning traces distilled from single-modality teachers
and merged into `<think>…</think><answer>X</answer>` (AVRT method). Built by `build-avrt`.

```python
from datasets import load_dataset
corpus = load_dataset("parquet", data_dir="corpus")  # paths in `frames`/`audio` are relative to this folder
```

## Models and prompts

| role | model | prompt | sampling |
|---|---|---|---|
{teachers}

Filter policy: `{config.filter}`; merger: `{config.merger_kind}`
(`concat` is a deterministic no-LLM baseline). Media: {config.media.num_frames} frames at segment
centres, {config.media.audio_seconds:g} s of {config.media.sample_rate} Hz mono audio (centred window).

## Statistics

{stats['samples_in']} samples in, {stats['samples_kept']} kept.

| stage | samples |
|---|---|
{funnel}

| dropped at | reason | samples |
|---|---|---|
{reasons or '| – | – | 0 |'}

- Vision teacher accuracy: {t['vision']['accuracy']} (no answer: {t['vision']['no_answer_rate']})
- Audio teacher accuracy: {t['audio']['accuracy']} (no answer: {t['audio']['no_answer_rate']})
- Teacher agreement: {stats['teacher_agreement']['rate']}
- Format compliance: {stats['format_compliance']}
- Think length ({stats['token_unit']}): {stats['think_length']['mean']} ± {stats['think_length']['std']}
- Answer letters kept: {stats['answer_letters']['kept']}
- Question types kept: {stats['question_types']['kept']}

Full figures: `stats.json`; plot: `stats.png`; dropped samples with reasons: `rejected/`.
"""
