"""PNG plots of a stage's ``metrics.jsonl``: SFT loss; GRPO each reward the recipe weighs, completion length."""

from __future__ import annotations

import re
from pathlib import Path

from training.runtime import read_metrics

REWARD_MEAN = re.compile(r"rewards/(.+)_reward/mean")  # TRL logs each reward function's mean under this key
PLOTS = {
    "sft": {"loss.png": [("loss", "training loss")]},
    "grpo": {
        "rewards.png": REWARD_MEAN,  # every reward the run weighs
        "completion_length.png": [("completions/mean_length", "mean completion length (tokens)")],
    },
}


def reward_series(records: list[dict]) -> list[tuple[str, str]]:
    """``(key, label)`` of every reward TRL logged, in first-seen order."""
    keys = dict.fromkeys(k for r in records for k in r if REWARD_MEAN.fullmatch(k))
    return [(k, f"{REWARD_MEAN.fullmatch(k).group(1).replace('_', ' ')} reward") for k in keys]


def plot_stage(stage: str, stage_dir: Path) -> list[Path]:
    """Write the stage's PNGs to ``stage_dir/plots/`` from its ``metrics.jsonl``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(stage_dir / "metrics.jsonl")
    (stage_dir / "plots").mkdir(parents=True, exist_ok=True)
    written = []
    for name, series in PLOTS[stage].items():
        series = reward_series(records) if series is REWARD_MEAN else series
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_title(f"{stage.upper()}: {', '.join(label for _, label in series)}")
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(stage_dir / "plots" / name, dpi=100)
        plt.close(fig)
        written.append(stage_dir / "plots" / name)
    return written
