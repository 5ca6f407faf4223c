"""The demo's teachers and merger: tiny models the project trains on the demo's AV task.

``python -m demo.models --manifest outputs/av/manifest_train.jsonl --out outputs/demo-models``
trains, from the tiny offline configs (``training.tiny_models``) and a seed,

* ``vision/``: an Omni thinker that sees only the 8 frames and answers the paper's vision-teacher
  prompt in the paper's format (``Visual Description: … / Reasoning: … / Answer: (X)``);
* ``audio/``: an Omni thinker that hears only the audio and answers the audio-teacher prompt
  (``Audio Description: … / Reasoning: … / Answer: (X)``);
* ``merger/``: the tiny Qwen2 text model, taught to answer the paper's merger prompt with
  ``<think>…</think><answer>X</answer>`` built from both analyses.

Each teacher is taught to name what its modality shows (the colour, or the pitch) and the two
options consistent with it (the task's options are in a fixed order, ``demo.task``), then to
answer one of those two: the loss at the answer letter is the mean of both letters' losses, so every
step pushes them equally and the teacher learns an even split between them. Served with sampling
(``configs/build/demo.yaml``: temperature 1, top_p 0.8), a teacher that learned its modality is
right about half the time, independently of the other teacher, so the both-correct filter keeps about
a quarter of the samples, spread over all four answers (a greedy teacher would always pick the same
letter for a colour, and the kept corpus would miss two answers). The merger is trained on the
merger prompt filled with both teachers right (what the filter lets through).
Training is teacher forcing on short templated targets (loss on the target only), batch 1, AdamW;
the three models train side by side, a process per core.
The models are cached: ``--out`` holds one folder per hash of the settings (seed, steps, learning
rate, the manifest's rows); a second run with the same settings reuses it and trains nothing.
The folder of the models is printed on the last line (``models: PATH``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from demo.task import consistent_letters, properties

ROLES = ("vision", "audio", "merger")
BUILD_CONFIG = Path(__file__).resolve().parents[1] / "configs/build/demo.yaml"  # its media settings


@dataclass(frozen=True)
class DemoModelSettings:
    """Everything that determines the trained models (the cache key, with the manifest's rows)."""

    seed: int = 0
    vision_steps: int = 400
    audio_steps: int = 600  # cheaper steps; more of them even out its two letters
    merger_steps: int = 500
    learning_rate: float = 1e-3
    version: int = 11  # bump when the targets, the training or the tiny models they start from change


# ----------------------------------------------------------------------------- targets (pure)

def clip_properties(row: dict) -> tuple[str, str]:
    """The (colour, pitch) of a manifest row, read from its correct option's text."""
    return properties(row["choices"], row["answer"])


def teacher_letters(row: dict, role: str) -> list[str]:
    """The two letters consistent with what ``role`` ("vision" or "audio") perceives in ``row``."""
    colour, pitch = clip_properties(row)
    return consistent_letters(row["choices"], colour=colour) if role == "vision" else \
        consistent_letters(row["choices"], pitch=pitch)


def vision_target(row: dict, letter: str) -> str:
    """What the vision teacher should say: the colour, its two options, ``letter`` as the answer."""
    colour, _ = clip_properties(row)
    first, second = teacher_letters(row, "vision")
    return (f"Visual Description: The screen is {colour}.\n\n"
            f"Reasoning: Options ({first}) and ({second}) show a {colour} screen.\n\n"
            f"Answer: ({letter})")


def audio_target(row: dict, letter: str) -> str:
    """What the audio teacher should say: the pitch, its two options, ``letter`` as the answer."""
    _, pitch = clip_properties(row)
    first, second = teacher_letters(row, "audio")
    return (f"Audio Description: The tone is {pitch}.\n\n"
            f"Reasoning: Options ({first}) and ({second}) have a {pitch} tone.\n\n"
            f"Answer: ({letter})")


TARGETS = {"vision": vision_target, "audio": audio_target}


def teacher_targets(row: dict, role: str) -> list[str]:
    """``role``'s target once with each of its two consistent letters: trained on both, the teacher
    learns an even split between them, so sampled it is right about half the time."""
    return [TARGETS[role](row, letter) for letter in teacher_letters(row, role)]


def merger_target(row: dict) -> str:
    """What the merger should write for a sample both teachers described."""
    colour, pitch = clip_properties(row)
    return (f"<think>The audio has a {pitch} tone and the frames show a {colour} screen; "
            f"only option {row['answer']} has both.</think><answer>{row['answer']}</answer>")


def merger_prompt(row: dict) -> str:
    """The paper's merger prompt for ``row`` with both teachers right (the only samples the
    both-correct filter sends to the merger), as the pipeline fills it."""
    from merger.prompt import render_merger_prompt
    from prompts import load_prompt

    return render_merger_prompt(load_prompt("merger"), row["question"], row["choices"], row["answer"],
                                audio_target(row, row["answer"]), vision_target(row, row["answer"]))


def settings_key(settings: DemoModelSettings, rows: list[dict]) -> str:
    """A short hash of the settings and the training rows."""
    blob = json.dumps([asdict(settings), rows], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- training (I/O)

def extract_media(rows: list[dict], root: Path, cache: Path) -> list[dict[str, Any]]:
    """Each row's frames and audio, extracted as build-avrt extracts them (its media store and the
    demo build config's media settings) into ``cache``, a thread per core; returns per row
    ``{"frames": [JPEG paths], "audio": WAV path}``. A build with ``cache_dir`` = ``cache`` finds them
    there, and the teachers learn from the very files they are later sent."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.config import load_config
    from media.store import MediaStore

    store = MediaStore(cache, cache, load_config(BUILD_CONFIG).media)

    def one(row: dict) -> dict[str, Any]:
        meta, _ = store.get(video=str(root / row["video"]))
        return {"frames": [cache / f for f in meta["frames"]], "audio": cache / meta["audio"]}

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # the decoders run outside the interpreter
        return list(pool.map(one, rows))


def _teacher_examples(processor, rows: list[dict], media: list[dict[str, Any]], role: str) -> list[dict]:
    """One tokenised (prompt + target) example per row, with the teacher's media (the frames or the
    audio of ``extract_media``), the loss on the target only, and ``other_letter``: the position of
    the answer letter and the token of the row's other consistent letter (``teacher_targets``), so
    that every step pushes the two letters equally (``_loss``)."""
    import soundfile as sf
    from PIL import Image

    from prompts import load_prompt
    from teachers.requests import teacher_prompt

    prompt = load_prompt(f"{role}_teacher")
    out = []
    for row, files in zip(rows, media):
        if role == "vision":
            inputs: dict[str, Any] = {"images": [Image.open(path).convert("RGB") for path in files["frames"]]}
            parts = [{"type": "image"} for _ in inputs["images"]]
        else:
            inputs, parts = {"audio": [sf.read(files["audio"], dtype="float32")[0]]}, [{"type": "audio"}]
        text = teacher_prompt(prompt, row["question"], row["choices"])
        messages = [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]
        head = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        first_target, second_target = (t + "<|im_end|>" for t in teacher_targets(row, role))
        example = {k: v for k, v in processor(text=[head + first_target], return_tensors="pt", **inputs).items()
                   if hasattr(v, "shape")}
        # the targets are text: tokenised alone they are the tail of the example's ids
        first, second = (processor.tokenizer(t, return_tensors="pt")["input_ids"] for t in (first_target, second_target))
        ids = example["input_ids"]
        if ids[0, -first.shape[1]:].tolist() != first[0].tolist():
            raise ValueError("the target does not tokenise the same inside the example")
        labels = ids.clone()
        labels[:, : ids.shape[1] - first.shape[1]] = -100
        position, token = _letter_slot(first, second)
        out.append({**example, "labels": labels, "other_letter": (ids.shape[1] - first.shape[1] + position, token)})
    return out


def _letter_slot(first, second) -> tuple[int, int]:
    """(position, token) where the two targets' token ids differ: the answer letter, and only it."""
    if first.shape != second.shape or int((first != second).sum()) != 1:
        raise ValueError("the two targets of a teacher must differ in exactly one token (the letter)")
    position = int((first != second).nonzero()[0, 1])
    return position, int(second[0, position])


def _merger_examples(tokenizer, rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        head = tokenizer.apply_chat_template([{"role": "user", "content": merger_prompt(row)}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer(head + merger_target(row) + "<|im_end|>", return_tensors="pt")
        n_prompt = len(tokenizer(head)["input_ids"])
        labels = ids["input_ids"].clone()
        labels[:, :n_prompt] = -100
        out.append({**ids, "labels": labels})
    return out


def _loss(model, example: dict):
    """Mean next-token loss on the target; at ``other_letter``'s position (teachers), the mean of the
    losses of both letters, whose optimum is an even split between them."""
    import torch

    inputs = {k: v for k, v in example.items() if k not in ("labels", "other_letter")}
    logp = torch.log_softmax(model(**inputs).logits[0, :-1].float(), dim=-1)
    labels = example["labels"][0, 1:]
    mask = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0)[:, None])[:, 0]
    if "other_letter" in example:
        position, token = example["other_letter"]
        nll = nll.clone()
        nll[position - 1] = 0.5 * (nll[position - 1] - logp[position - 1, token])
    return (nll * mask).sum() / mask.sum()


def _fit(model, examples: list[dict], steps: int, lr: float, seed: int, desc: str) -> float:
    """Teacher forcing, batch 1, shuffled each epoch, learning rate decaying linearly to 0 (the last
    steps settle the confident tokens); returns the mean loss of the last 20 steps."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    order_rng = random.Random(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    order: list[int] = []
    losses: list[float] = []
    for _ in tqdm(range(steps), desc=desc, unit="step"):
        if not order:
            order = list(range(len(examples)))
            order_rng.shuffle(order)
        loss = _loss(model, examples[order.pop()])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail)


def _save(model, path: Path) -> None:
    """Save ``model`` as a sampling model: ``transformers serve`` takes ``do_sample`` from the model's
    generation config (a request's temperature alone does not turn sampling on; 0 turns it off)."""
    model.generation_config.do_sample = True
    model.save_pretrained(path)


def _train_role(role: str, folder: Path, rows: list[dict], media: list[dict[str, Any]], settings: DemoModelSettings,
                threads: int) -> float:
    """Build ``role``'s model from the tiny config, train it on ``rows`` and save it in ``folder/role``;
    returns its final loss."""
    import torch
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration, Qwen2ForCausalLM

    from training.tiny_models import build_omni, build_text

    torch.set_num_threads(threads)
    seed = settings.seed + ROLES.index(role)
    if role == "merger":
        path = build_text(folder / role, seed)
        model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32)
        examples = _merger_examples(AutoTokenizer.from_pretrained(path), rows)
    else:
        path = build_omni(folder / role, seed)
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        examples = _teacher_examples(AutoProcessor.from_pretrained(path), rows, media, role)
    steps = {"vision": settings.vision_steps, "audio": settings.audio_steps, "merger": settings.merger_steps}[role]
    loss = _fit(model, examples, steps, settings.learning_rate, settings.seed, role if role == "merger" else f"{role} teacher")
    _save(model, path)
    return loss


def train_models(manifest: Path, out: Path, settings: DemoModelSettings = DemoModelSettings(),
                 media_cache: Path | None = None) -> Path:
    """Train (or reuse) the three models for ``manifest``; return their folder. The clips' media are
    extracted into ``media_cache`` (default ``out/media-cache``; ``extract_media``); the models train
    side by side, one process per core (up to three), each on its share of the cores."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{manifest}: no rows to train on")
    folder = out / settings_key(settings, rows)
    if (folder / "done.json").exists():
        print(f"reusing the trained demo models in {folder}")
        return folder
    started = time.monotonic()
    cores = os.cpu_count() or 1
    workers = min(len(ROLES), cores)
    media = extract_media(rows, manifest.parent, media_cache or out / "media-cache")
    jobs = [(role, folder, rows, media, settings, max(1, cores // workers)) for role in ROLES]
    if workers == 1:
        losses = [_train_role(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            losses = list(pool.map(_train_role, *zip(*jobs)))
    report: dict[str, Any] = {"settings": asdict(settings), "rows": len(rows),
                              **{f"{role}_loss": loss for role, loss in zip(ROLES, losses)},
                              "seconds": round(time.monotonic() - started, 1)}
    (folder / "done.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="the AV task's training manifest")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo-models"), help="cache folder")
    parser.add_argument("--media-cache", type=Path,
                        help="where the clips' frames and audio are extracted (default OUT/media-cache); "
                             "give build-avrt the same folder as cache_dir and it reuses them")
    defaults = DemoModelSettings()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vision-steps", type=int, default=defaults.vision_steps)
    parser.add_argument("--audio-steps", type=int, default=defaults.audio_steps)
    parser.add_argument("--merger-steps", type=int, default=defaults.merger_steps)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    args = parser.parse_args(argv)
    settings = DemoModelSettings(args.seed, args.vision_steps, args.audio_steps, args.merger_steps,
                                 args.learning_rate)
    print(f"models: {train_models(args.manifest, args.out, settings, args.media_cache)}")


if __name__ == "__main__":
    main()
