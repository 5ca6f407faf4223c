"""Stage 1 (AVRT section 3.2): supervised fine-tuning on the merged traces, loss on the answer only.

TRL's ``SFTTrainer`` with a collator built on ``student.inputs.build_inputs`` (the same prompt,
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

from student.inputs import MEDIA_KEYS, Layout, build_inputs
from training.data import MediaLoader, load_rows, media_loader
from training.encoders import enable_encoded_audio, encode_media, encoded_kwargs
from training.runtime import (
    JsonlMetrics,
    NoLastStepCheckpoint,
    load_processor,
    load_student,
    memory_plan,
    resume_point,
    save_final,
    trl_config,
    use_encoder_cache,
    write_plan,
)
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
    """``SFTTrainer`` whose frozen encoders run once per batch without grad (``encode_frozen=True``); logs the
    share of each micro-batch that is padding (``padding_share``)."""

    def __init__(self, *args, encode_frozen: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.encode_frozen = encode_frozen
        if encode_frozen:
            enable_encoded_audio(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["attention_mask"]
        self._metrics["train" if model.training else "eval"]["padding_share"].append(
            1.0 - mask.sum().item() / mask.numel())
        if self.encode_frozen:
            media = {k: inputs.pop(k) for k in MEDIA_KEYS if k in inputs}
            inputs.update(encoded_kwargs(encode_media(model, media), media))
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


def text_lengths(tokenizer, frame, target_column: str) -> list[int]:
    """Per row, the tokens of its question, options and trace: the part of a row's length that varies
    (every clip brings about the same number of media tokens). Used to group rows of similar length."""
    texts = [f"{q} {' '.join(c)} {t}" for q, c, t in zip(frame["question"], frame["choices"], frame[target_column])]
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def longest_row(collator: SFTCollator, dataset: Dataset, rows: int = 8) -> int:
    """Tokens of the longest of the ``rows`` longest-text rows, processed as training sees them."""
    order = sorted(range(len(dataset)), key=lambda i: -dataset[i]["length"])[:rows]
    return max(collator([dataset[i]])["input_ids"].shape[1] for i in order)


def build_sft_trainer(config: TrainConfig, model_path: str, out_dir: Path) -> AVSFTTrainer:
    """The configured ``AVSFTTrainer`` on the corpus rows that have a trace, from ``model_path``."""
    from trl import SFTConfig

    stage = config.sft
    frame = load_rows(config.data, extra_columns=(stage.target_column,)).frame
    frame = frame[frame[stage.target_column].astype(bool)]
    processor = load_processor(model_path)
    frame = frame.assign(length=text_lengths(processor.tokenizer, frame, stage.target_column))
    dataset = Dataset.from_pandas(frame, preserve_index=False)
    model = load_student(model_path, config)
    collator = SFTCollator(processor, media_loader(config), stage.target_column,
                           config.system_prompt, config.av_layout)
    plan = memory_plan(config, stage, model, lambda: longest_row(collator, dataset))
    write_plan(out_dir, "sft", plan)
    args = trl_config(SFTConfig, stage, config, out_dir, plan, dataset_kwargs={"skip_prepare_dataset": True},
                      completion_only_loss=None, length_column_name="length")
    return AVSFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                        processing_class=processor,
                        callbacks=[JsonlMetrics(out_dir / "metrics.jsonl"), NoLastStepCheckpoint()],
                        encode_frozen=use_encoder_cache(config))


def run_sft(config: TrainConfig, model_path: str, out_dir: Path) -> Path:
    """Train stage 1 into ``out_dir`` (resuming from its last checkpoint); returns ``out_dir/final``."""
    trainer = build_sft_trainer(config, model_path, out_dir)
    trainer.train(resume_from_checkpoint=resume_point(out_dir))
    return save_final(trainer, out_dir)
