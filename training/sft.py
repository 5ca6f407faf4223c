"""Stage 1 (AVRT section 3.2): supervised fine-tuning on the merged traces, loss on the answer only.

TRL's ``SFTTrainer`` with a collator built on ``training.student.build_inputs`` (the same prompt,
media and positions as GRPO and evaluation), ``skip_prepare_dataset`` and
``remove_unused_columns=False``: each batch is the prompt (8 frames and the audio of a clip on one
time axis, the question) plus the trace, with labels ``-100`` everywhere but the trace and its
end-of-turn token. With frozen encoders (the default) ``AVSFTTrainer`` runs them under ``no_grad``
before the forward (``training.encoders``), so they never enter the backward graph, also not under
activation checkpointing (whose input-embedding hooks would otherwise make their outputs require grad).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import SFTTrainer

from training.encoders import enable_encoded_audio, encode_media, encoded_kwargs
from training.runtime import (
    JsonlMetrics,
    MediaLoader,
    load_corpus,
    load_processor,
    load_student,
    resume_point,
    trl_config,
    use_encoder_cache,
)
from training.student import MEDIA_KEYS, Layout, build_inputs
from training.train_config import TrainConfig


class SFTCollator:
    """Corpus rows -> ``build_inputs(processor, samples, completions=traces)``."""

    def __init__(self, processor, media: MediaLoader, target_column: str = "merged", system: str | None = None,
                 layout: Layout = "aligned"):
        self.processor, self.media, self.target_column, self.system = processor, media, target_column, system
        self.layout = layout

    def __call__(self, rows: list[dict[str, Any]]):
        samples = [self.media(row) for row in rows]
        return build_inputs(self.processor, samples, [row[self.target_column] for row in rows], system=self.system,
                            layout=self.layout)


class AVSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose frozen encoders run once per batch without grad (``encode_frozen=True``)."""

    def __init__(self, *args, encode_frozen: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.encode_frozen = encode_frozen
        if encode_frozen:
            enable_encoded_audio(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.encode_frozen:
            media = {k: inputs.pop(k) for k in MEDIA_KEYS if k in inputs}
            inputs.update(encoded_kwargs(encode_media(model, media), media))
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


def build_sft_trainer(config: TrainConfig, model_path: str, out_dir: Path) -> AVSFTTrainer:
    """The configured ``AVSFTTrainer`` on the corpus rows that have a trace, from ``model_path``."""
    from trl import SFTConfig

    stage = config.sft
    frame = load_corpus(config.corpus, config.data, extra_columns=(stage.target_column,))
    frame = frame[frame[stage.target_column].astype(bool)]
    dataset = Dataset.from_pandas(frame, preserve_index=False)
    processor = load_processor(model_path)
    model = load_student(model_path, config)
    args = trl_config(SFTConfig, stage, config, out_dir, dataset_kwargs={"skip_prepare_dataset": True},
                      completion_only_loss=None)
    collator = SFTCollator(processor, MediaLoader(config.corpus, config.data, config.seed), stage.target_column,
                           config.system_prompt, config.av_layout)
    out_dir.mkdir(parents=True, exist_ok=True)
    return AVSFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                        processing_class=processor, callbacks=[JsonlMetrics(out_dir / "metrics.jsonl")],
                        encode_frozen=use_encoder_cache(config))


def run_sft(config: TrainConfig, model_path: str, out_dir: Path) -> Path:
    """Train stage 1 into ``out_dir`` (resuming from its last checkpoint); returns ``out_dir/final``."""
    trainer = build_sft_trainer(config, model_path, out_dir)
    trainer.train(resume_from_checkpoint=resume_point(out_dir))
    final = out_dir / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    return final
