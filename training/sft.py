"""Stage 1 (AVRT section 3.2): supervised fine-tuning on the merged traces, loss on the answer only.

TRL's ``SFTTrainer`` with a collator built on ``training.student.build_inputs`` (the same prompt and
media as GRPO and evaluation), ``skip_prepare_dataset`` and ``remove_unused_columns=False``: each
batch is the prompt (8 frames as a video, the audio, the question) plus the trace, with labels
``-100`` everywhere but the trace and its end-of-turn token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset

from training.runtime import JsonlMetrics, MediaLoader, load_corpus, load_processor, load_student, optim_kwargs, resume_point
from training.student import build_inputs
from training.train_config import TrainConfig


class SFTCollator:
    """Corpus rows -> ``build_inputs(processor, samples, completions=traces)``."""

    def __init__(self, processor, media: MediaLoader, target_column: str = "merged", system: str | None = None):
        self.processor, self.media, self.target_column, self.system = processor, media, target_column, system

    def __call__(self, rows: list[dict[str, Any]]):
        samples = [self.media(row) for row in rows]
        return build_inputs(self.processor, samples, [row[self.target_column] for row in rows], system=self.system)


def run_sft(config: TrainConfig, model_path: str, out_dir: Path) -> Path:
    """Train stage 1 into ``out_dir`` (resuming from its last checkpoint); returns ``out_dir/final``."""
    from trl import SFTConfig, SFTTrainer

    stage = config.sft
    frame = load_corpus(config.corpus, config.data, extra_columns=(stage.target_column,))
    frame = frame[frame[stage.target_column].astype(bool)]
    dataset = Dataset.from_pandas(frame, preserve_index=False)
    processor = load_processor(model_path)
    model = load_student(model_path, config)
    args = SFTConfig(
        **optim_kwargs(stage, config, out_dir),
        dataset_kwargs={"skip_prepare_dataset": True},
        completion_only_loss=None,
    )
    collator = SFTCollator(processor, MediaLoader(config.corpus, config.data, config.seed), stage.target_column,
                           config.system_prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                         processing_class=processor, callbacks=[JsonlMetrics(out_dir / "metrics.jsonl")])
    trainer.train(resume_from_checkpoint=resume_point(out_dir))
    final = out_dir / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    return final
