"""Stage 2 (AVRT section 3.2): GRPO with the audio and the frames in generation *and* in the loss.

TRL's ``GRPOTrainer`` has no audio or video support: given a Qwen2.5-Omni processor it would build
the prompt, but its log-prob forwards (old policy, reference model, the loss) get no
``input_features`` / ``pixel_values_videos``, so the policy would be trained on bare placeholder
tokens while the run looks healthy. ``AVGRPOTrainer`` fixes that:

* each prompt's media are loaded and processed **once per step** by ``student.inputs.encode_prompt``
  (the G rollouts of a prompt share the same tensors and the same modality dropout), with the
  prompt's own TMRoPE ``position_ids`` (aligned audio-visual layout for clips);
* with frozen encoders (``freeze_encoders`` and ``encoder_cache``, the defaults) the prompt's media
  are also **encoded once per step** (``training.encoders.encode_media``, under ``no_grad``) and the
  outputs feed generation of all G rollouts, the old-policy, reference and loss forwards: 1
  encoding per prompt per step instead of 3·G. The reference model shares the policy's frozen
  encoders' weights (both load from the same checkpoint), so the encodings are the same;
* the processed prompt ids go to ``generate`` (with the multimodal special tokens suppressed) through
  ``_tokenize_prompts``, the encoder outputs and per-row positions through ``generate`` kwargs;
* the per-row media ride in the batch under ``av_media`` (a list, one entry per row), so TRL's
  shuffle and split keep them aligned with their rows; every log-prob forward
  (``_get_per_token_logps_and_entropies``) collates the media of exactly its rows and checks, row
  by row, that the media belong to that row's prompt tokens;
* with ``grpo.rollout: vllm`` the completions come from vLLM servers instead of ``generate``
  (``training.rollout``: one request of ``n`` = G per prompt, the policy's weights pushed to the
  servers after every optimizer step), and TRL's importance-sampling correction weighs the loss by
  the policy's over the engine's sampling probabilities.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from configs import UserError
from student.inputs import (
    MEDIA_KEYS,
    PROMPT_NAME,
    Layout,
    collate_media,
    continue_positions,
    encode_prompt,
    generation_suppress_tokens,
    pad_positions,
    student_prompt,
)
from training.data import MEDIA_COLUMNS, MediaLoader, load_rows, media_loader
from training.encoders import EncodedMedia, enable_encoded_audio, encode_media, encoded_kwargs, thinker
from training.rewards import REWARDS, make_length_reward
from training.rollout import RolloutEngine, RolloutServerError, rollout_request
from training.runtime import (
    JsonlMetrics,
    NoLastStepCheckpoint,
    load_processor,
    load_student,
    memory_plan,
    resume_point,
    save_final,
    say,
    trl_config,
    use_bf16,
    use_encoder_cache,
    write_plan,
)
from training.train_config import GRPOStageConfig, TrainConfig
from training.weight_sync import sync_method, weight_sync


def row_forward_kwargs(rows: list[dict[str, Any]], device: torch.device | str | None = None) -> dict[str, Any]:
    """Media kwargs of ``rows`` (in row order): their encoder outputs when cached, else the raw media."""
    media = collate_media([{k: r[k] for k in MEDIA_KEYS if k in r} for r in rows])
    if rows and "encoded" in rows[0]:
        return encoded_kwargs(EncodedMedia.concat([r["encoded"] for r in rows]), media, device)
    return {k: v.to(device) for k, v in media.items()} if device is not None else media


def sequence_positions(rows: list[dict[str, Any]], width: int, completion_length: int) -> torch.Tensor:
    """``(3, rows, width)`` positions of left-padded prompts followed by ``completion_length`` tokens."""
    return pad_positions([continue_positions(r["positions"], len(r["prompt_ids"]) + completion_length) for r in rows],
                         "left", width)


@contextmanager
def generate_kwargs(model, **extra) -> Iterator[None]:
    """Within the block, ``model.generate`` also receives ``extra`` (TRL only forwards tensors to it)."""
    target = thinker(model)
    target.generate = partial(type(target).generate, target, **extra)
    try:
        yield
    finally:
        del target.generate


class AVGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that feeds the student's audio and frames to generation and to every log-prob forward."""

    def __init__(self, *args, media_loader: MediaLoader, system_prompt: str | None = None,
                 layout: Layout = "aligned", cache_encoders: bool = True, rollout_engine: RolloutEngine | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.media_loader = media_loader
        self.system_prompt = system_prompt
        self.layout = layout
        self.cache_encoders = cache_encoders
        self._row_media: list[dict[str, Any]] | None = None
        self.rollout_engine = rollout_engine
        self._synced_step: int | None = None  # the global step whose weights the engine holds
        if rollout_engine is not None:
            # TRL's importance-sampling correction and its mismatch metrics key on `use_vllm`; our engine
            # takes the place of TRL's own vLLM client (built only when args.use_vllm, which stays False).
            self.use_vllm = True
        if cache_encoders:
            for model in (self.model, getattr(self, "ref_model", None)):
                if model is not None:
                    enable_encoded_audio(model)

    # -- media, once per prompt -------------------------------------------------------------
    def _prepare_media(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per row: ``{"prompt_ids": tuple, "positions", <media tensors>, ["encoded"]}``; once per prompt."""
        cache: dict[Any, dict[str, Any]] = {}
        rows = []
        for row in inputs:
            key = row["id"]
            if key not in cache:
                sample = self.media_loader(row)
                prompt = encode_prompt(self.processing_class, sample, self.system_prompt, self.layout)
                entry = {k: prompt[k] for k in MEDIA_KEYS if k in prompt}
                if self.rollout_engine is not None:
                    entry["sample"] = sample  # the engine's request carries the same media
                entry["prompt_ids"] = tuple(prompt["input_ids"].tolist())
                entry["positions"] = prompt["position_ids"]
                if self.cache_encoders:
                    entry["encoded"] = encode_media(self.model, {k: prompt[k] for k in MEDIA_KEYS if k in prompt})
                cache[key] = entry
            rows.append(cache[key])
        return rows

    def _generate_and_score_completions(self, inputs):
        self._row_media = self._prepare_media(inputs)
        output = super()._generate_and_score_completions(inputs)
        output["av_media"] = self._row_media  # a list: shuffled and split with the rows
        return output

    def _tokenize_prompts(self, prompts: list):
        rows = self._row_media
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("AVGRPOTrainer: media were not prepared for this generation batch")
        kwargs = row_forward_kwargs(rows)
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        return [list(r["prompt_ids"]) for r in rows], None, tensors

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        if self.rollout_engine is not None:
            return self._engine_rollouts(num_generations)
        rows = self._row_media
        width = max(len(p) for p in prompt_ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        device = self.accelerator.device
        extra = {"position_ids": sequence_positions(rows, width, 0).to(device)}
        if self.cache_encoders:
            extra["mm_encoder_outputs"] = row_forward_kwargs(rows, device).get("mm_encoder_outputs")
        with generate_kwargs(self.model, **{k: v for k, v in extra.items() if v is not None}):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 *args, **kwargs)

    # -- rollouts from vLLM ------------------------------------------------------------------
    def _sync_engine(self) -> float:
        """Push the policy's weights to the engine; seconds it took (0 on other ranks).

        With several processes the servers are shared: every rank holds the same weights after an
        optimizer step, so rank 0 alone pushes them, and the other ranks wait for it (and learn
        whether it failed) before they sample."""
        failure, seconds = None, 0.0
        if self.accelerator.is_main_process:
            try:
                seconds = self.rollout_engine.sync(self.model)
            except RolloutServerError as err:
                failure = str(err)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            failure = broadcast_object_list([failure], from_process=0)[0]
        if failure is not None:
            raise RolloutServerError(failure)
        return seconds

    def _engine_rollouts(self, num_generations: int) -> tuple[list[list[int]], list[list[float]]]:
        """Completion ids and sampling log-probs of every row from the engine: one request (``n`` =
        G) per prompt, after pushing the policy's weights if an optimizer step happened since."""
        if self._synced_step != self.state.global_step:
            seconds = self._sync_engine()
            self._synced_step = self.state.global_step
            self._metrics["train"]["rollout/sync_seconds"].append(seconds)
        rows = self._row_media
        groups = [rows[i:i + num_generations] for i in range(0, len(rows), num_generations)]
        if any(len(g) != num_generations or any(r is not g[0] for r in g) for g in groups):
            raise RuntimeError("AVGRPOTrainer: rows do not come in groups of G copies of one prompt")
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_completion_length}
        if self.top_k:
            sampling["top_k"] = self.top_k
        if self.repetition_penalty != 1.0:
            sampling["repetition_penalty"] = self.repetition_penalty
        suppress = generation_suppress_tokens(self.processing_class)
        bodies = [rollout_request(g[0]["sample"], self.system_prompt, self.layout, n=num_generations,
                                  sampling=sampling, suppress_ids=suppress, processor=self.processing_class)
                  for g in groups]
        started = time.perf_counter()
        answers = self.rollout_engine.generate(bodies)
        self._metrics["train"]["rollout/generate_seconds"].append(time.perf_counter() - started)
        completions = [c for answer in answers for c in answer]
        if len(completions) != len(rows):
            raise RolloutServerError(f"the engine returned {len(completions)} completions for {len(rows)} rows")
        return [c.ids for c in completions], [c.logprobs for c in completions]

    def _compute_loss(self, model, inputs):
        self._row_media = inputs["av_media"]
        return super()._compute_loss(model, inputs)

    # -- every log-prob forward gets its rows' media -----------------------------------------
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, pixel_values=None,
                                           **unused):
        if pixel_values is not None:
            raise RuntimeError("AVGRPOTrainer: image inputs must come through av_media, not TRL's image path")
        rows = self._row_media
        if rows is None or len(rows) != input_ids.size(0):
            raise RuntimeError(f"AVGRPOTrainer: {0 if rows is None else len(rows)} media rows for "
                               f"{input_ids.size(0)} sequences")
        self._check_alignment(rows, input_ids, attention_mask, logits_to_keep)
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies, aux_losses = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            model_inputs = {"input_ids": ids, "attention_mask": mask,
                            "position_ids": sequence_positions(rows[start:end], ids.size(1), logits_to_keep).to(ids.device),
                            **row_forward_kwargs(rows[start:end], ids.device)}
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            with self.accelerator.autocast():
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            all_logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                all_entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux_losses.append(outputs.aux_loss)
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux = torch.stack(aux_losses).mean() if compute_aux_loss else None
        return logps, entropies, aux

    @staticmethod
    def _check_alignment(rows, input_ids, attention_mask, logits_to_keep) -> None:
        """Each row's media must belong to that row's prompt (media and prompt ids travel together)."""
        prompts = input_ids[:, :-logits_to_keep]
        masks = attention_mask[:, :-logits_to_keep].bool()
        for i, row in enumerate(rows):
            if tuple(prompts[i][masks[i]].tolist()) != row["prompt_ids"]:
                raise RuntimeError(f"AVGRPOTrainer: media of row {i} do not belong to its prompt")


def grpo_dataset(frame, system: str | None = None, prompt: str = PROMPT_NAME) -> Dataset:
    """Rows for GRPO: a text ``prompt`` (for TRL's logs and rewards) plus the data's columns (a corpus's
    extracted media, or a published row's files)."""
    columns = [c for c in ("id", "question", "choices", "answer", "frames", "audio", "duration", *MEDIA_COLUMNS.values())
               if c in frame.columns]
    records = frame[columns].to_dict("records")
    for record in records:
        messages = [{"role": "system", "content": system}] if system else []
        text = student_prompt(record["question"], record["choices"], prompt)
        record["prompt"] = messages + [{"role": "user", "content": text}]
    return Dataset.from_list(records)


def reward_functions(config: TrainConfig) -> tuple[list, list[float]]:
    """The rewards ``grpo.rewards`` weighs (``training.rewards.REWARDS``), those of weight 0 left out."""
    stage = config.grpo
    funcs, weights = [], []
    for name, weight in stage.rewards.items():
        if not weight:
            continue
        if name == "length":
            length = stage.length_reward
            funcs.append(make_length_reward(length.min_words, length.max_words, length.sigma))
        else:
            funcs.append(REWARDS[name])
        weights.append(weight)
    return funcs, weights


def build_grpo_trainer(config: TrainConfig, model_path: str, out_dir: Path,
                       rollout_engine: RolloutEngine | None = None) -> AVGRPOTrainer:
    """The configured ``AVGRPOTrainer`` on the corpus, policy loaded from ``model_path``; with
    ``grpo.rollout: vllm`` its completions come from ``rollout_engine`` (``open_rollout_engine``)."""
    stage = config.grpo
    if stage.beta > 0 and not Path(model_path).is_dir():
        raise UserError("GRPO with beta > 0 rebuilds the reference model from the policy's directory: "
                        f"{model_path} is not a local directory (run SFT first or set grpo.beta=0)")
    if (stage.rollout == "vllm") != (rollout_engine is not None):
        raise ValueError(f"grpo.rollout is {stage.rollout!r}: "
                         + ("give the rollout engine" if rollout_engine is None else "no rollout engine expected"))
    frame = load_rows(config.data).frame
    processor = load_processor(model_path)
    model = load_student(model_path, config)
    funcs, weights = reward_functions(config)

    def tokens_per_row() -> int:  # the longest of a few prompts, plus a whole completion
        media = media_loader(config)  # its own: training's draws stay as they were
        rows = frame.head(8).to_dict("records")
        prompts = [encode_prompt(processor, media(row), config.system_prompt, config.av_layout) for row in rows]
        return max(p["input_ids"].numel() for p in prompts) + stage.max_completion_length

    plan = memory_plan(config, stage, model, tokens_per_row, reference_model=stage.beta > 0)
    write_plan(out_dir, "grpo", plan)
    args = trl_config(GRPOConfig, stage, config, out_dir, plan, reward_weights=weights,
                      generation_kwargs={"suppress_tokens": generation_suppress_tokens(processor)})
    return AVGRPOTrainer(
        model=model, reward_funcs=funcs, args=args, train_dataset=grpo_dataset(frame, config.system_prompt, config.prompt),
        processing_class=processor,
        callbacks=[JsonlMetrics(out_dir / "metrics.jsonl"), NoLastStepCheckpoint()],
        media_loader=media_loader(config), system_prompt=config.system_prompt,
        layout=config.av_layout, cache_encoders=use_encoder_cache(config), rollout_engine=rollout_engine,
    )


def servers_secret(stage: GRPOStageConfig) -> str | None:
    """The secret of the servers of ``grpo.rollout_urls``, from ``grpo.rollout_secret_env``; None only
    with ``grpo.rollout_allow_unguarded``."""
    secret = os.environ.get(stage.rollout_secret_env) or None
    if secret is None and not stage.rollout_allow_unguarded:
        raise RolloutServerError(f"grpo.rollout_urls: set {stage.rollout_secret_env} (grpo.rollout_secret_env) to the "
                                 "secret the rollout servers were started with (docs/training.md, \"Guarding the "
                                 "rollout servers\")")
    return secret


def check_rollout_settings(stage: GRPOStageConfig) -> None:
    """Refuse (``UserError``) what ``grpo.rollout: vllm`` cannot do in this launch, before anything starts:
    several processes without shared servers, ZeRO-3, or a weight sync that needs a GPU without one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not stage.rollout_urls:
            raise UserError("grpo.rollout=vllm with several training processes samples from shared servers: start "
                            "them and give grpo.rollout_urls (docs/training.md), or launch one process")
        if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
            raise UserError("grpo.rollout=vllm needs each rank to hold the whole policy (ZeRO-2, not ZeRO-3)")
    sync_method(stage.rollout_weight_sync, on_gpu=torch.cuda.is_available(), own_server=not stage.rollout_urls)


def open_rollout_engine(config: TrainConfig, model_path: str, out_dir: Path, stack: ExitStack) -> RolloutEngine | None:
    """The rollout engine of ``grpo.rollout: vllm`` (None for ``hf``): the servers of ``grpo.rollout_urls``,
    else a dev-mode server started here on an export of ``model_path`` (stopped when ``stack`` closes);
    every server checked to refuse a control request without the run's secret."""
    stage = config.grpo
    if stage.rollout != "vllm":
        return None
    check_rollout_settings(stage)
    urls, server = list(stage.rollout_urls), None
    if urls:
        secret = servers_secret(stage)
    else:
        from serving.vllm_server import new_secret, sigterm_as_exit
        from training.rollout import start_rollout_server

        stack.enter_context(sigterm_as_exit())  # a SIGTERM'd trainer still stops its server
        say(f"[grpo] starting a vLLM rollout server (log: {out_dir / 'rollout' / 'server.log'})")
        secret = new_secret()  # this run's: held in memory here and in the server's environment only
        server = start_rollout_server(model_path, out_dir, secret, stage.rollout_gpu_memory,
                                      stage.rollout_server_timeout_s, dtype="bfloat16" if use_bf16(config) else "float32")
        stack.callback(server.stop)
        urls = [server.base_url]
    engine = RolloutEngine(urls, timeout_s=stage.rollout_server_timeout_s, secret=secret)
    engine.server = server
    for warning in engine.check_guarded(stage.rollout_allow_unguarded):
        say(f"[grpo] warning: {warning}")
    engine.weight_sync = weight_sync(stage.rollout_weight_sync, engine, on_gpu=torch.cuda.is_available(),
                                     own_server=server is not None, sync_dir=stage.rollout_sync_dir)
    say(f"[grpo] the policy's weights reach the rollout server(s) after every step by {engine.weight_sync.name}")
    stack.callback(engine.close)
    return engine


def run_grpo(config: TrainConfig, model_path: str, out_dir: Path) -> Path:
    """Train stage 2 from ``model_path`` (a directory when beta > 0) into ``out_dir``; returns ``out_dir/final``."""
    with ExitStack() as stack:
        engine = open_rollout_engine(config, model_path, out_dir, stack)
        trainer = build_grpo_trainer(config, model_path, out_dir, engine)
        try:
            trainer.train(resume_from_checkpoint=resume_point(out_dir))
        except RolloutServerError as err:
            from transformers.trainer_utils import get_last_checkpoint

            last = get_last_checkpoint(str(out_dir))
            raise RolloutServerError(f"GRPO stopped at step {trainer.state.global_step}: {err}. The last checkpoint "
                                     f"is kept ({last or 'none yet'}); run the same command again to resume from it"
                                     ) from None
    return save_final(trainer, out_dir)
