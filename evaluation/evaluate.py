"""Evaluate a student (a Qwen2.5-Omni or Qwen3-Omni thinker) on AVQA, OmniBench, Daily-Omni, MMAR, MMAU,
AVQA-R1-6K or a manifest.

    python -m evaluation.evaluate --model PATH --benchmark avqa|omnibench|dailyomni|mmar|mmau|avqa-r1-6k|manifest \\
        --data FILE_OR_DIR [FILE ...] [--media-root DIR] [--modalities av,a,v,t] [--limit N] [--out DIR] \\
        [--difficulty-from CORPUS_OR_TEACHER_RESULTS]
    python -m evaluation.evaluate --backend vllm --model PATH [--gpus 0,1,2,3] ...
    python -m evaluation.evaluate --backend openai --base-url http://HOST:8000/v1 --served-model NAME ...

``--data`` is the benchmark as published: the annotation file, the folder it was downloaded to, or
several parquet parts (layouts in ``evaluation.benchmarks``); media are found in the published layout
around it, else a message names ``--media-root``. Bad input (a config, a path, a ``--model`` folder that
does not exist, an ``--out`` holding other settings' predictions) stops with one line, exit status 2.

The student sees exactly what it saw in training (``student.inputs``): the same prompt
(``prompts/student.txt``) and media handling (``media``): 8 frames at segment centres as one video,
and the 10 s audio window centred on the clip, mono 16 kHz; a still image (OmniBench) goes in as an
image; frames pass through the same JPEG encoding the corpus uses. Three backends produce the text:
``hf`` (``model.generate`` here, batched with left padding), ``vllm`` (vLLM servers this command
starts and stops, ``evaluation.vllm_backend``) and ``openai`` (any OpenAI-compatible server); the
last two send the same prompt, media and layout (``evaluation.api_generator``): an aligned clip goes
as one lossless video with its sound, and what vLLM still does differently is written to
``run.json`` (``backend.differs_from_hf``). ``report.json`` records the run's pace (``throughput``:
items/s, and generated tokens/s where counted). Each output is scored twice
(``evaluation.scoring``): the *exact* rule (the chosen option, an option-text answer matched to its
option, never misread as a letter) and the benchmark's *official* rule (letter, or MMAU/MMAR's
token-set match, EchoInk-R1's letter rule); items whose published answer is not an option are
unscorable (listed, counted).

Modality settings (``--modalities``): ``av`` is the full input; ``a`` drops the frames/image and
``v`` drops the audio; ``t`` drops both (text only: the question and options, no media sent or
decoded; Omni-R1's "without audio"); nothing else changes (same prompt text). Several settings share
one media decode.

Settings are one ``EvalConfig`` (``evaluation.config``): ``--config FILE.yaml``, then ``--set
KEY=VALUE``, then the flags. Defaults are the trainer's: 8 frames, the centred 10 s audio window, its
``av_layout``, and GRPO's answer budget (512 new tokens). Decoding is greedy by default;
``--temperature T > 0`` samples (with ``--top-p``/``--top-k``, seeded by ``--seed``).

Outputs in ``--out``: ``predictions.jsonl`` (one row per item and setting: raw output, chosen
letter, both scores; appended per batch, so a re-run skips what is done), ``run.json`` (the settings
the predictions were made with: a re-run with different ones is refused unless ``--overwrite``),
``report.json`` and ``report.md`` (exact and official accuracy overall, per category, per tag, per
modality setting; unscorable ids; disagreements; parse-failure rate, media errors, decoding
settings; easy/medium/hard with ``--difficulty-from``). A run in which every item of a setting
failed writes its report marked as not a result and exits non-zero.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from configs import (
    UserError,
    apply_overrides,
    config_error,
    merged,
    missing_model,
    read_yaml,
    set_dotted,
    user_errors,
)
from evaluation.api_generator import OpenAIGenerator
from evaluation.benchmarks import (
    LOADERS,
    BenchItem,
    BenchmarkFormatError,
    check_media_found,
    load_benchmark,
    resolve_data,
)
from evaluation.config import Decoding, EvalConfig, recipe_config, trained_defaults
from evaluation.report import load_difficulty, render_markdown, summarize
from evaluation.scoring import OFFICIAL_RULE, RULE_DOC, score_output
from media import MediaSettings, load_clip
from media.files import cap_pixels, jpeg_bytes
from prompts import STUDENT_PROMPT
from student.served import ALIGNED_DIFFERENCE, JPEG_KEY, suppress_bias

log = logging.getLogger("avrt.evaluate")

SETTINGS = ("av", "a", "v", "t")  # t: text only, no media


# ---------------------------------------------------------------- settings

def parse_modalities(text: str) -> list[str]:
    """``"av,a,v,t"`` -> ``["av", "a", "v", "t"]`` (``va`` is ``av``); rejects unknown settings."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        norm = "".join(sorted(set(part)))  # "va" / "av" -> "av"
        if norm not in SETTINGS or len(norm) != len(part):
            raise ValueError(f"unknown modality setting {part!r}: use av, a, v or t (comma-separated)")
        if norm not in out:
            out.append(norm)
    if not out:
        raise ValueError("no modality setting given")
    return out


def check_modalities(items: Sequence[BenchItem], modalities: Sequence[str]) -> None:
    """Every requested setting's media must be a subset of what the items carry (no frames for MMAR...);
    ``t`` needs none."""
    for item in items:
        for setting in modalities:
            if not set(setting) - {"t"} <= set(item.modality):
                raise ValueError(f"setting {setting!r} needs media that item {item.id!r} lacks "
                                 f"(it has {item.modality!r})")


# ---------------------------------------------------------------- media

@dataclass
class ItemMedia:
    """Decoded media of one item; an ``*_error`` says why a part is missing."""

    frames: list[Image.Image] | None = None
    frames_are_video: bool = True
    audio: np.ndarray | None = None
    duration: float | None = None
    frames_error: str | None = None
    audio_error: str | None = None


def _jpeg_roundtrip(frame: np.ndarray, quality: int) -> Image.Image:
    """The frame as the corpus stores it (JPEG), so evaluation sees what training saw; the JPEG bytes
    stay in ``info`` so the API backend sends exactly these pixels."""
    data = jpeg_bytes(frame, quality)
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    rgb.info[JPEG_KEY] = data
    return rgb


def load_item_media(item: BenchItem, settings: MediaSettings = MediaSettings(), frames: bool = True,
                    audio: bool = True, image_max_pixels: int | None = None) -> ItemMedia:
    """Frames (8 at segment centres, or the still image) and audio (centred window, 16 kHz mono),
    decoded by the pipeline's loader (``media.load_clip``); frames pass through the corpus's JPEG."""
    clip = load_clip(item.video, item.image, item.audio, settings, want_frames=frames, want_audio=audio)
    media = ItemMedia(frames_are_video=clip.frames_are_video, audio=clip.audio,
                      duration=clip.duration if item.video else None,
                      frames_error=clip.frames_error if frames else None, audio_error=clip.audio_error)
    if clip.frames is not None:
        media.frames = ([_jpeg_roundtrip(f, settings.jpeg_quality) for f in clip.frames] if clip.frames_are_video
                        else [cap_pixels(Image.fromarray(clip.frames[0]), image_max_pixels)])
    return media


def make_sample(item: BenchItem, media: ItemMedia, setting: str, prompt: str = STUDENT_PROMPT):
    """The ``StudentSample`` for one setting, or the media error that prevents it.

    The ablations drop the frames (``a``), the audio (``v``) or both (``t``); question, options and
    prompt (the file ``prompt``, the one the student was trained with) stay.
    """
    from student.inputs import StudentSample

    if "v" in setting and media.frames is None:
        return f"frames: {media.frames_error or 'not loaded'}"
    if "a" in setting and media.audio is None:
        return f"audio: {media.audio_error or 'not loaded'}"
    return StudentSample(question=item.question, choices=list(item.choices),
                         frames=media.frames if "v" in setting else None,
                         audio=media.audio if "a" in setting else None,
                         frames_are_video=media.frames_are_video, duration=media.duration, prompt=prompt)


# ---------------------------------------------------------------- generation

class Generator(Protocol):
    """Texts for a batch of ``StudentSample``s; an ``Exception`` in place of a text is that sample's
    failure (becomes its error row)."""

    def generate(self, samples: Sequence[Any]) -> list[str | Exception]: ...


def resolve_dtype(dtype: str, on_gpu: bool) -> str:
    """``--dtype``, where ``auto`` is bf16 on a GPU and fp32 on CPU (both backends)."""
    return dtype if dtype != "auto" else ("bfloat16" if on_gpu else "float32")


def load_student(path: str | Path, device: str = "auto", dtype: str = "auto"):
    """``(model, processor)``: a thinker checkpoint, or the thinker of a full Qwen2.5-Omni / Qwen3-Omni one."""
    import torch
    from transformers import AutoConfig, AutoProcessor

    from student.family import family_of, without_router_loss

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, resolve_dtype(dtype, device.startswith("cuda")))
    config = AutoConfig.from_pretrained(path)
    family = family_of(config)
    if config.model_type == family.full_model_type:
        # A released full checkpoint (baseline rows of Table 3) or an export: keep the thinker, skip the talker.
        model = family.full_class().from_pretrained(path, dtype=torch_dtype, enable_audio_output=False).thinker
    else:
        model = family.thinker_class().from_pretrained(path, dtype=torch_dtype)
    without_router_loss(model.config)  # a MoE student trained with TRL saves it on
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


class HFGenerator:
    """Batched ``model.generate`` on the student's inputs (left padding, media tokens suppressed)."""

    def __init__(self, model, processor, decoding: Decoding, system: str | None = None, layout: str = "aligned"):
        from student.inputs import generation_suppress_tokens

        self.model, self.processor, self.decoding, self.system = model, processor, decoding, system
        self.layout = layout
        self.suppress = generation_suppress_tokens(processor)
        self.last_inputs = None  # the processor outputs of the last batch (for inspection)
        self.new_tokens: list[int] = []

    def generate(self, samples: Sequence[Any]) -> list[str]:
        import torch

        from student.inputs import build_inputs

        inputs = build_inputs(self.processor, samples, system=self.system, layout=self.layout)
        self.last_inputs = inputs
        dtype = next(self.model.parameters()).dtype
        device = next(self.model.parameters()).device
        inputs = {k: (v.to(device, dtype) if torch.is_floating_point(v) and k != "video_second_per_grid"
                      else v.to(device)) for k, v in inputs.items()}
        if not self.decoding.greedy:
            torch.manual_seed(self.decoding.seed)
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.decoding.generate_kwargs(), suppress_tokens=self.suppress,
                                      pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        stops = {tokenizer.pad_token_id, tokenizer.eos_token_id}
        self.new_tokens = [int(sum(1 for t in row.tolist() if t not in stops)) for row in new]
        return tokenizer.batch_decode(new, skip_special_tokens=True)


# ---------------------------------------------------------------- predictions file

PREDICTIONS = "predictions.jsonl"
EXIT_PENDING = 3  # predictions left for a re-run (a server stopped answering), as build-avrt's pending samples
RUN_FILE = "run.json"
SCORING_VERSION = "exact+official/2"  # rows scored before this version are not mixed with new ones


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Rows of a predictions file; a torn last line (crash mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def check_run(out: Path, run: dict[str, Any], overwrite: bool) -> None:
    """Resume only a run made with the same settings; ``overwrite`` starts afresh."""
    out.mkdir(parents=True, exist_ok=True)
    run_file, predictions = out / RUN_FILE, out / PREDICTIONS
    if overwrite:
        predictions.unlink(missing_ok=True)
    elif run_file.exists() and predictions.exists():
        old = json.loads(run_file.read_text())
        diff = {k: (old.get(k), v) for k, v in run.items() if old.get(k) != v}
        if diff:
            raise UserError(f"{out} holds predictions made with other settings {diff}; "
                            "use another --out or --overwrite")
    run_file.write_text(json.dumps(run, indent=1, sort_keys=True))


# ---------------------------------------------------------------- the loop

def evaluate(items: Sequence[BenchItem], generator: Generator, modalities: Sequence[str], out: Path, rule: str,
             batch_size: int = 4, media: MediaSettings = MediaSettings(),
             load_media: Callable[..., ItemMedia] = load_item_media, prompt: str = STUDENT_PROMPT
             ) -> list[dict[str, Any]]:
    """Predict every (item, setting) not yet in ``out/predictions.jsonl``; return the rows of
    ``items`` × ``modalities`` (old and new). ``rule`` is the benchmark's official rule
    (``evaluation.scoring``); the exact rule is always scored too. ``prompt``: the student's prompt file."""
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / PREDICTIONS
    done = {(r["id"], r["modality"]) for r in read_predictions(path)}
    todo = [item for item in items if any((item.id, m) not in done for m in modalities)]
    log.info("%d items x %d settings: %d items to do (%d predictions on file)", len(items), len(modalities),
             len(todo), len(done))
    bar = tqdm(total=len(todo), unit="item", desc="evaluate", disable=None)  # off when not a terminal
    with path.open("a", encoding="utf-8") as handle, bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            need = [m for m in modalities if any((it.id, m) not in done for it in batch)]
            frames, audio = any("v" in m for m in need), any("a" in m for m in need)
            loaded = [load_media(it, media, frames=frames, audio=audio) if frames or audio else ItemMedia()
                      for it in batch]
            for setting in need:
                pending = [(it, md) for it, md in zip(batch, loaded) if (it.id, setting) not in done]
                rows, unanswered = _predict(pending, setting, generator, rule, prompt)
                if unanswered:
                    log.warning("%d prediction(s) left for a re-run, no answer from the server(s): %s",
                                len(unanswered), unanswered[0])
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                done.update((row["id"], setting) for row in rows)
            bar.update(len(batch))
    wanted = {(item.id, m) for item in items for m in modalities}
    return [r for r in read_predictions(path) if (r["id"], r["modality"]) in wanted]


def unanswered(output: Any) -> bool:
    """A request that got no answer for transport (a server down, timing out, overloaded): not a
    verdict on the item, which is left for a re-run rather than scored (``teachers.client``)."""
    if not isinstance(output, Exception):
        return False
    from teachers.client import CallPending, EndpointError

    return isinstance(output, (CallPending, EndpointError))


def _predict(pending: Sequence[tuple[BenchItem, ItemMedia]], setting: str, generator: Generator,
             rule: str, prompt: str = STUDENT_PROMPT) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of ``pending`` in ``setting``, and the reasons of those left without an answer (no row)."""
    samples = [(item, make_sample(item, media, setting, prompt)) for item, media in pending]
    runnable = [(item, s) for item, s in samples if not isinstance(s, str)]
    started = time.perf_counter()
    outputs = generator.generate([s for _, s in runnable]) if runnable else []
    seconds = (time.perf_counter() - started) / max(1, len(runnable))
    by_id = {item.id: text for (item, _), text in zip(runnable, outputs)}
    tokens = dict(zip((item.id for item, _ in runnable), getattr(generator, "new_tokens", []) or []))
    rows, left = [], []
    for item, sample in samples:
        if unanswered(by_id.get(item.id)):
            left.append(getattr(by_id[item.id], "reason", str(by_id[item.id])))
            continue
        row = {"id": item.id, "modality": setting, "category": item.category, "tags": dict(item.tags),
               "gold": item.answer, "gold_text": item.answer_text,
               "unscorable": None if item.scorable else "published answer is not one of the options"}
        output = None if isinstance(sample, str) else by_id[item.id]
        if output is None or isinstance(output, Exception):
            media_failed = output is None
            error = sample if media_failed else f"generation: {getattr(output, 'reason', output)}"
            row.update(output=None, letter=None, parse_reason="media error" if media_failed else "generation error",
                       prediction="", correct=False if item.scorable else None, correct_official=False, error=error)
        else:
            scored = score_output(output, item.choices, item.answer, item.answer_text, rule)
            row.update(output=output, letter=scored.letter, parse_reason=scored.parse_reason,
                       prediction=scored.official_prediction, correct=scored.correct,
                       correct_official=scored.correct_official, error=None,
                       new_tokens=tokens.get(item.id), seconds=round(seconds, 3))
        rows.append(row)
    return rows, left


# ---------------------------------------------------------------- CLI

def _prompt_info(prompt: str, system: str | None) -> dict[str, Any]:
    from prompts import load_prompt, prompt_sha256

    return {"name": prompt, "sha256": prompt_sha256(load_prompt(prompt)), "system": system}


def _media_info(settings: MediaSettings) -> dict[str, Any]:
    return {**settings.model_dump(), "frames": "segment centres, one video (still image as image)",
            "audio": "centred window, mono 16 kHz"}


# Each flag sets one field of ``EvalConfig`` (flags win over --set, which wins over --config).
FLAGS: dict[str, str] = {
    "model": "model", "benchmark": "benchmark", "data": "data", "media_root": "media_root", "backend": "backend",
    "base_url": "server.base_url", "served_model": "server.served_model", "max_in_flight": "server.max_in_flight",
    "request_timeout": "server.timeout_s", "retries": "server.retries", "api_key_env": "server.api_key_env",
    "mm_processor_kwargs": "server.mm_processor_kwargs", "gpus": "gpus", "vllm_python": "vllm_python",
    "export_cache": "export_cache",
    "modalities": "modalities", "limit": "limit", "out": "out", "difficulty_from": "difficulty_from",
    "batch_size": "decoding.batch_size", "max_new_tokens": "decoding.max_new_tokens",
    "temperature": "decoding.temperature", "top_p": "decoding.top_p", "top_k": "decoding.top_k",
    "seed": "decoding.seed", "num_frames": "media.num_frames", "audio_seconds": "media.audio_seconds",
    "layout": "layout", "system": "system", "recipe": "recipe", "prompt": "prompt", "device": "device", "dtype": "dtype", "overwrite": "overwrite",
    "quiet": "quiet",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help="YAML file of EvalConfig fields (evaluation/config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. decoding.max_new_tokens=1024 (repeatable)")
    parser.add_argument("--model",
                        help="hf and vllm backends: student checkpoint dir (thinker or full Qwen2.5-Omni / Qwen3-Omni). "
                             "openai backend: optional local copy of the served model's tokenizer (its media tokens "
                             "are then suppressed with logit_bias, as the hf backend suppresses them)")
    parser.add_argument("--benchmark", choices=sorted(LOADERS), help="benchmark format of --data")
    parser.add_argument("--data", type=Path, nargs="+",
                        help="the published annotation file, the folder it was downloaded to, or several parquet "
                             "parts (OmniBench from the Hub)")
    parser.add_argument("--media-root", type=Path,
                        help="where the media live (AVQA: video dir, default data/video of the repository; "
                             "Daily-Omni: Videos/; OmniBench: dir holding mm_data/; MMAR/MMAU: dir the audio paths "
                             "are relative to; AVQA-R1-6K: the split folder holding images/ and audios/). Default: "
                             "the published layout around --data")
    parser.add_argument("--backend", choices=("hf", "openai", "vllm"),
                        help="hf (default): transformers generate in this process; vllm: vLLM servers started here "
                             "from --model (a trainer checkpoint, exported first, or an export), stopped at the end; "
                             "openai: an OpenAI-compatible server you run (vLLM, transformers serve) given by "
                             "--base-url and --served-model")
    parser.add_argument("--gpus", help="vllm backend: GPUs, one server each, items spread over them (e.g. 0,1,2,3); "
                                       "default one server (on the GPU, else on CPU)")
    parser.add_argument("--vllm-python", help="vllm backend: a Python with vLLM installed (default .venv-vllm)")
    parser.add_argument("--export-cache", type=Path,
                        help="vllm backend: where trainer checkpoints are exported, once per content "
                             "(default outputs/export-cache)")
    parser.add_argument("--base-url", help="openai backend: server URL ending in /v1")
    parser.add_argument("--served-model", help="openai backend: the model name the server serves")
    parser.add_argument("--max-in-flight", type=int, help="openai backend: requests in flight (default 16)")
    parser.add_argument("--request-timeout", type=float, help="openai backend: seconds per request (default 600)")
    parser.add_argument("--retries", type=int, help="openai backend: retries per request (default 4)")
    parser.add_argument("--api-key-env", help="openai backend: environment variable holding the key")
    parser.add_argument("--mm-processor-kwargs", action="store_true",
                        help="openai backend: send the frame size and fps the hf backend uses as vLLM's "
                             "mm_processor_kwargs (vLLM started with --trust-request-mm-kwargs; needs --model)")
    parser.add_argument("--modalities",
                        help="comma-separated settings among av (full), a (audio only), v (visual only), t (text "
                             "only: no media); default: the benchmark's full input (av, or a for MMAR/MMAU)")
    parser.add_argument("--limit", type=int, help="evaluate the first N items only")
    parser.add_argument("--out", type=Path, help="output dir (default outputs/eval/BENCHMARK)")
    parser.add_argument("--difficulty-from", type=Path,
                        help="teacher results for easy/medium/hard: a build-avrt output dir (corpus/ and "
                             "rejected/ parquets), a parquet, or a JSONL with id, vision_answer, audio_answer, answer")
    parser.add_argument("--batch-size", type=int,
                        help="items per generate call (hf: left padding, default 4; openai: default --max-in-flight)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="answer budget (default: the trainer's GRPO max_completion_length, 512)")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, help="nucleus sampling (with --temperature > 0)")
    parser.add_argument("--top-k", type=int, help="top-k sampling, 0 = off (with --temperature > 0)")
    parser.add_argument("--seed", type=int, help="sampling seed")
    parser.add_argument("--num-frames", type=int, help="frames per video (default 8, as in training)")
    parser.add_argument("--audio-seconds", type=float,
                        help="length of the centred audio window (default 10, as in training; the student caps at 30)")
    parser.add_argument("--layout", choices=("aligned", "separate"),
                        help="audio/video layout, as the student was trained (the trainer's av_layout; default "
                             "aligned: the openai backend then needs vLLM started with --trust-request-mm-kwargs)")
    parser.add_argument("--system", help="system prompt (default none, as in training)")
    parser.add_argument("--recipe",
                        help="how the student was trained, so it is asked the same way: a recipe of configs/recipes/ "
                             "(avrt, echoink-r1, omni-r1, ...) or a trainer config YAML; sets the prompt, system "
                             "turn, layout, image size cap and answer budget (flags still win). Default: the "
                             "checkpoint's training_config.yaml (written by the trainer), else avrt's")
    parser.add_argument("--prompt", help="the student's prompt file: a name of prompts/ (student, echoink_r1, "
                                         "omni_r1) or a path (default: the recipe's)")
    parser.add_argument("--device", help="hf backend: cuda, cpu or auto (default)")
    parser.add_argument("--dtype", help="hf and vllm backends: bfloat16, float16, float32 or auto (default: bf16 "
                                        "on GPU, fp32 on CPU)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --out")
    parser.add_argument("--quiet", action="store_true", help="less logging")
    return parser


def parse_config(argv: Sequence[str] | None = None) -> EvalConfig:
    """The run's config from the command line; a bad one is a ``UserError`` naming the field."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    path, overrides = args.pop("config"), args.pop("set")
    try:
        data = apply_overrides(read_yaml(path), overrides)
        for flag, value in args.items():
            set_dotted(data, FLAGS[flag], value)
        if trained := recipe_config(data.get("recipe"), data.get("model")):  # what the command sets wins
            data = merged(trained_defaults(trained), data)
        return EvalConfig.model_validate(data)
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise UserError(config_error(err, EvalConfig)) from None


def _backend(config: EvalConfig) -> dict[str, Any]:
    """What the predictions are made with (recorded in run.json and the report; a re-run resumes only
    with the same, so where the servers run is not part of it)."""
    if config.backend == "hf":
        return {"kind": "hf", "model": str(Path(config.model).resolve())}
    if config.backend == "vllm":
        backend = {"kind": "vllm", "model": str(Path(config.model).resolve()), "layout": config.layout}
    else:
        backend = {"kind": "openai", "base_url": config.server.base_url, "served_model": config.server.served_model,
                   "tokenizer": str(Path(config.model).resolve()) if config.model else None,
                   "layout": config.layout, "mm_processor_kwargs": config.server.mm_processor_kwargs}
    if config.layout == "aligned":
        backend["differs_from_hf"] = ALIGNED_DIFFERENCE
    return backend


def _vllm_generator(config: EvalConfig, decoding: Decoding, out: Path, stack: ExitStack) -> OpenAIGenerator:
    """Servers of our own (``evaluation.vllm_backend``), stopped when ``stack`` closes, and a generator
    that spreads the items over them."""
    import torch
    from transformers import AutoProcessor

    from evaluation.vllm_backend import (
        MAX_NUM_SEQS,
        SERVED_NAME,
        SERVER_DIR,
        parse_gpus,
        served_checkpoint,
        vllm_servers,
    )
    from serving.vllm_server import ServerFailed, VllmNotFound

    gpus = parse_gpus(config.gpus)
    on_gpu = bool(gpus) or torch.cuda.is_available()
    checkpoint, exported = served_checkpoint(config.model, config.export_cache)
    if exported:
        log.info("exported %s for vLLM: %s", config.model, checkpoint)
    log.info("starting %d vLLM server(s) (logs: %s)", max(1, len(gpus)), out / SERVER_DIR)
    try:
        servers = stack.enter_context(vllm_servers(checkpoint, gpus, out / SERVER_DIR,
                                                   resolve_dtype(config.dtype, on_gpu), on_gpu, config.vllm_python,
                                                   config.server.timeout_s))
    except (VllmNotFound, ServerFailed) as err:
        raise SystemExit(f"error: {err}") from None
    server = config.server.model_copy(update={"base_url": servers[0].base_url, "served_model": SERVED_NAME,
                                              "max_in_flight": MAX_NUM_SEQS["gpu" if on_gpu else "cpu"]})
    return OpenAIGenerator(server, decoding, system=config.system, logit_bias=suppress_bias(str(checkpoint)),
                           processor=AutoProcessor.from_pretrained(checkpoint), layout=config.layout,
                           base_urls=[s.base_url for s in servers])


def _generator(config: EvalConfig, decoding: Decoding, out: Path, stack: ExitStack) -> Generator:
    """The backend's generator; a model or tokenizer that cannot be loaded is a ``UserError``."""
    try:
        if config.backend == "vllm":
            return _vllm_generator(config, decoding, out, stack)
        if config.backend == "openai":
            processor = None
            if config.server.mm_processor_kwargs:
                from transformers import AutoProcessor

                processor = AutoProcessor.from_pretrained(config.model)
            return OpenAIGenerator(config.server, decoding, system=config.system, logit_bias=suppress_bias(config.model),
                                   processor=processor, layout=config.layout)
        model, processor = load_student(config.model, config.device, config.dtype)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {config.model}: cannot load it ({type(err).__name__}: {err})") from None
    return HFGenerator(model, processor, decoding, system=config.system, layout=config.layout)


def _load_items(config: EvalConfig, media: bool = True) -> tuple[list[BenchItem], list[Path]]:
    """Items (after ``limit``) and the annotation files, their media checked when ``media`` (a run of
    text-only settings needs none); bad input is a ``UserError``."""
    try:
        files = resolve_data(config.benchmark, config.data)
        items = load_benchmark(config.benchmark, files, config.media_root)
        if config.limit:
            items = items[: config.limit]
        missing = check_media_found(config.benchmark, items) if media else []
    except BenchmarkFormatError as err:
        raise UserError(str(err)) from None
    if missing:
        log.warning("%d media files missing (e.g. %s); those items become media errors", len(missing), missing[0][1])
    return items, files


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the CLI and return the report (``main`` is the console entry point).

    Raises ``UserError`` on bad input (``main`` makes it one line and exit status 2); after writing the
    report, exits non-zero (``SystemExit``) with ``EXIT_PENDING`` when predictions are left for a re-run
    (no answer from the servers: never scored), and when every item of a setting failed: such a run is
    not a result."""
    config = parse_config(argv)
    if problem := missing_model(config.model):  # a local folder that is not there: never ask the hub
        raise UserError(problem)
    logging.basicConfig(level=logging.WARNING if config.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    backend = _backend(config)
    rule = OFFICIAL_RULE[config.benchmark]
    native = "a" if config.benchmark in ("mmar", "mmau") else "av"
    try:
        modalities = parse_modalities(config.modalities or native)
    except ValueError as err:
        raise UserError(str(err)) from None
    items, files = _load_items(config, media=modalities != ["t"])
    try:
        check_modalities(items, modalities)
    except ValueError as err:
        raise UserError(str(err)) from None
    decoding = config.decoding.model_copy(update={"batch_size": config.batch_size})
    out = config.out_dir
    model_name = backend.get("model") or backend["served_model"]
    data = [str(f.resolve()) for f in files]
    run = {"model": model_name, "backend": backend, "benchmark": config.benchmark,
           "data": data[0] if len(data) == 1 else data,
           "decoding": {k: v for k, v in decoding.describe().items() if k != "batch_size"} | {"seed": decoding.seed},
           "prompt": _prompt_info(config.prompt, config.system), "media": _media_info(config.media), "scoring": SCORING_VERSION}
    if config.backend == "hf" and config.layout != "aligned":
        run["layout"] = config.layout
    if config.image_max_pixels:
        run["media"]["image_max_pixels"] = config.image_max_pixels
    check_run(out, run, config.overwrite)

    before = {(r["id"], r["modality"]) for r in read_predictions(out / PREDICTIONS)}
    with ExitStack() as stack:  # the vllm backend's servers stop when it closes (also on Ctrl-C and SIGTERM)
        generator = _generator(config, decoding, out, stack)
        batch_size = (config.decoding.batch_size or generator.in_flight) if config.backend == "vllm" else config.batch_size
        started = time.perf_counter()
        rows = evaluate(items, generator, modalities, out, rule, batch_size=batch_size, media=config.media,
                        load_media=partial(load_item_media, image_max_pixels=config.image_max_pixels),
                        prompt=config.prompt)
        seconds = time.perf_counter() - started
    difficulty = load_difficulty(config.difficulty_from) if config.difficulty_from else None
    meta = {"benchmark": config.benchmark, "model": model_name, "backend": backend, "data": run["data"],
            "n_items": len(items),
            "scoring": {"exact": RULE_DOC["exact"], "official": f"{rule}: {RULE_DOC[rule]}"},
            "prompt": run["prompt"], "media": run["media"],
            "decoding": decoding.describe(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds_this_run": round(seconds, 1), "throughput": throughput(rows, before, seconds)}
    report = summarize(rows, meta, difficulty, str(config.difficulty_from) if config.difficulty_from else None)
    failed = [name for name, summary in report["settings"].items() if summary["all_failed"]]
    left = len(items) * len(modalities) - len(rows)
    report["status"] = ("failed: every item failed in " + ", ".join(failed) if failed
                        else f"incomplete: {left} predictions left for a re-run" if left else "ok")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render_markdown(report))
    for setting, summary in report["settings"].items():
        print(f"{config.benchmark} [{setting}] exact {summary['accuracy']} over {summary['scorable']} scorable, "
              f"official {summary['accuracy_official']} over {summary['n']} (unscorable {summary['unscorable']}, "
              f"disagreements {len(summary['disagreements'])}, parse failures {summary['parse_failure_rate']}, "
              f"media errors {summary['media_errors']}, generation errors {summary['generation_errors']})")
    print(f"report: {out / 'report.md'}")
    if left:
        logs = f"; server logs: {out / 'servers'}" if config.backend == "vllm" else ""
        print(f"error: {left} of {len(items) * len(modalities)} predictions got no answer from the server(s) (see the "
              f"warnings above{logs}). The {len(rows)} written are kept, and none is scored from a failed request: "
              "run the same command again to finish the rest", file=sys.stderr)
        raise SystemExit(EXIT_PENDING)
    if failed:
        first = next(r["error"] for r in rows if r.get("error"))
        raise SystemExit(f"error: every item failed in setting(s) {', '.join(failed)}: this is not a result "
                         f"(first error: {first}). Check --media-root / --base-url; report: {out / 'report.md'}")
    return report


def throughput(rows: Sequence[dict[str, Any]], before: set[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """This run's pace: items (all their settings) and predictions made per second, and generated tokens
    per second where the backend counts them (``new_tokens``: the hf backend, and servers that report
    their usage, vLLM's)."""
    new = [r for r in rows if (r["id"], r["modality"]) not in before and r.get("error") is None]
    tokens = [r["new_tokens"] for r in new if isinstance(r.get("new_tokens"), int)]
    pace = {"items": len({r["id"] for r in new}), "predictions": len(new), "seconds": round(seconds, 2),
            "new_tokens": sum(tokens) if tokens else None}
    per_s = max(seconds, 1e-9)
    pace.update(items_per_s=round(pace["items"] / per_s, 3), predictions_per_s=round(len(new) / per_s, 3),
                new_tokens_per_s=round(sum(tokens) / per_s, 1) if tokens else None)
    return pace


def main(argv: Sequence[str] | None = None) -> None:
    with user_errors():
        run(argv)


if __name__ == "__main__":
    main()
