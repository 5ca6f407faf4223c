"""PNG plots of a stage's ``metrics.jsonl``: SFT loss; GRPO accuracy reward, format reward, length."""

from __future__ import annotations

from pathlib import Path

from training.runtime import read_metrics

PLOTS = {
    "sft": {"loss.png": [("loss", "training loss")]},
    "grpo": {
        "rewards.png": [("rewards/accuracy_reward/mean", "accuracy reward"),
                        ("rewards/format_reward/mean", "format reward")],
        "completion_length.png": [("completions/mean_length", "mean completion length (tokens)")],
    },
}


def plot_stage(stage: str, stage_dir: Path) -> list[Path]:
    """Write the stage's PNGs to ``stage_dir/plots/`` from its ``metrics.jsonl``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(stage_dir / "metrics.jsonl")
    (stage_dir / "plots").mkdir(parents=True, exist_ok=True)
    written = []
    for name, series in PLOTS[stage].items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_title(f"{stage.upper()}: {', '.join(label for _, label in series)}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(stage_dir / "plots" / name, dpi=100)
        plt.close(fig)
        written.append(stage_dir / "plots" / name)
    return written
