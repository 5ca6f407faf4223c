"""The demo's audio-visual task: a question that needs both the picture and the sound.

Each clip has one visual property (screen colour: red or blue) and one audio property (tone pitch:
low or high). Every question lists the same four options in one fixed order (``OPTIONS``):

    (A) red + low   (B) red + high   (C) blue + low   (D) blue + high

so for any clip one option is right, one matches only the picture, one only the sound and one
neither. A model that sees only the frames (or hears only the audio) can rule out two options and
must guess between the other two, so a perfect single-modality teacher is right half the time; only
both modalities pin the answer. The order is fixed so that a tiny model can learn which letters
carry a colour or a pitch (with options shuffled per question it would have to read them).

Clips are drawn in blocks of the four combinations; each block goes to the train or the test split
(seeded), so both splits hold every answer equally often. Each clip also gets a small seeded
variation (a detuned tone, a shifted moving pattern) so test clips are not copies of training ones.

``python -m demo.task --out outputs/demo/av-n320 --n 320`` renders the clips (``media.synthetic``)
and writes ``manifest_train.jsonl`` and ``manifest_test.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

COLOURS = ("red", "blue")
PITCHES = ("low", "high")
LETTERS = "ABCD"
QUESTION = "What colour is the screen and what pitch is the tone?"
COMBINATIONS: tuple[tuple[str, str], ...] = tuple((c, p) for c in COLOURS for p in PITCHES)


def option_text(colour: str, pitch: str) -> str:
    return f"a {colour} screen with a {pitch} tone"


OPTIONS: tuple[str, str, str, str] = tuple(option_text(c, p) for c, p in COMBINATIONS)  # type: ignore[assignment]


@dataclass(frozen=True)
class AVItem:
    """One question: the clip's properties and variation, the (fixed) options and the correct letter."""

    id: str
    colour: str
    pitch: str
    answer: str
    split: str  # "train" | "test"
    detune: float = 1.0  # the tone's frequency is the pitch's times this
    box_offset: int = 0  # pixels the moving pattern starts from
    choices: tuple[str, str, str, str] = OPTIONS

    def manifest_row(self, video: str) -> dict:
        """The project's manifest row (``id, video, question, choices, answer, question_type``)."""
        return {"id": self.id, "video": video, "question": QUESTION, "choices": list(self.choices),
                "answer": self.answer, "question_type": "av-colour-pitch"}


def answer_letter(colour: str, pitch: str) -> str:
    """The letter of the option with ``colour`` and ``pitch``."""
    return LETTERS[COMBINATIONS.index((colour, pitch))]


def make_items(n: int, seed: int = 0, test_fraction: float = 0.25) -> list[AVItem]:
    """``n`` items, deterministic from ``seed``: blocks of the 4 combinations (shuffled within the
    block), each block in the test split with probability ``test_fraction``."""
    rng = random.Random(seed)
    items: list[AVItem] = []
    while len(items) < n:
        split = "test" if rng.random() < test_fraction else "train"
        block = list(COMBINATIONS)
        rng.shuffle(block)
        for colour, pitch in block[: n - len(items)]:
            items.append(AVItem(id=f"av{len(items):05d}", colour=colour, pitch=pitch,
                                answer=answer_letter(colour, pitch), split=split,
                                detune=round(rng.uniform(0.9, 1.1), 3), box_offset=rng.randrange(256)))
    return items


def consistent_letters(choices: tuple[str, ...] | list[str] = OPTIONS, *, colour: str | None = None,
                       pitch: str | None = None) -> list[str]:
    """Letters of the options consistent with what one modality observed (colour or pitch)."""
    out = []
    for letter, text in zip(LETTERS, choices):
        if colour is not None and f"a {colour} screen" not in text:
            continue
        if pitch is not None and f"a {pitch} tone" not in text:
            continue
        out.append(letter)
    return out


def properties(choices: list[str] | tuple[str, ...], answer: str) -> tuple[str, str]:
    """The (colour, pitch) of a question, read from its correct option's text."""
    words = choices[LETTERS.index(answer)].split()  # "a {colour} screen with a {pitch} tone"
    return words[1], words[5]


def write_task(out: Path, n: int = 40, seed: int = 0, seconds: float = 3.0, test_fraction: float = 0.25) -> dict[str, Path]:
    """Render the task's clips under ``out/videos`` and write ``out/manifest_{train,test}.jsonl``;
    returns split -> manifest. Each clip is a coloured screen with a pure tone."""
    from media.synthetic import ClipSpec, write_clips

    out = Path(out)
    items = make_items(n, seed, test_fraction)
    specs = [ClipSpec(name=item.id, seconds=seconds, colour=item.colour, sound="tone", pitch=item.pitch,
                      detune=item.detune, box_offset=item.box_offset) for item in items]
    videos = write_clips(specs, out / "videos")
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for item, video in zip(items, videos):
        rows[item.split].append(item.manifest_row(str(video.relative_to(out))))
    paths = {split: out / f"manifest_{split}.jsonl" for split in rows}
    for split, path in paths.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.task", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, default=320, help="number of clips (about 3/4 train, 1/4 test)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the clips' properties, variation and split")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    args = parser.parse_args(argv)
    paths = write_task(args.out, args.n, args.seed, args.seconds)
    print(f"wrote {args.n} clips and " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
