"""The demo's audio-visual task: a question that needs both the picture and the sound.

Each clip has one visual property (screen colour) and one audio property (tone pitch). The four
options are built from two colours x two pitches: the answer, one that matches only the picture,
one that matches only the sound, and one that matches neither. A model that sees only the frames
(or hears only the audio) can rule out two options and must guess between the other two, so a
perfect single-modality teacher is right half the time; only both modalities pin the answer.
Pure logic; rendering is ``media.synthetic.write_clip``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLOURS = ("red", "green", "blue", "yellow")
PITCHES = ("low", "middle", "high")
LETTERS = "ABCD"
QUESTION = "What colour is the screen and what pitch is the tone?"


@dataclass(frozen=True)
class AVItem:
    """One question: the clip's properties, the shuffled options and the correct letter."""

    id: str
    colour: str
    pitch: str
    choices: tuple[str, str, str, str]
    answer: str
    split: str  # "train" | "test"

    def manifest_row(self, video: str) -> dict:
        """The project's manifest row (``id, video, question, choices, answer, question_type``)."""
        return {"id": self.id, "video": video, "question": QUESTION, "choices": list(self.choices),
                "answer": self.answer, "question_type": "av-colour-pitch"}


def option_text(colour: str, pitch: str) -> str:
    return f"a {colour} screen with a {pitch} tone"


def make_item(index: int, rng: random.Random, test_fraction: float = 0.25) -> AVItem:
    """Draw one item: true (colour, pitch), a distractor colour and pitch, shuffled options."""
    colour = rng.choice(COLOURS)
    pitch = rng.choice(PITCHES)
    choices, answer = draw_options(colour, pitch, rng)
    split = "test" if rng.random() < test_fraction else "train"
    return AVItem(id=f"av{index:05d}", colour=colour, pitch=pitch, choices=choices, answer=answer, split=split)


def draw_options(colour: str, pitch: str, rng: random.Random) -> tuple[tuple[str, str, str, str], str]:
    """Shuffled options for a clip of ``colour`` and ``pitch`` (one distractor colour and pitch
    drawn), and the correct letter. Also re-asks a training clip with other options."""
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    other_pitch = rng.choice([p for p in PITCHES if p != pitch])
    options = [option_text(colour, pitch), option_text(colour, other_pitch),
               option_text(other_colour, pitch), option_text(other_colour, other_pitch)]
    correct = options[0]
    rng.shuffle(options)
    return tuple(options), LETTERS[options.index(correct)]  # type: ignore[return-value]


def make_items(n: int, seed: int = 0, test_fraction: float = 0.25) -> list[AVItem]:
    """``n`` items, deterministic from ``seed``."""
    rng = random.Random(seed)
    return [make_item(i, rng, test_fraction) for i in range(n)]


def consistent_letters(item: AVItem, *, colour: str | None = None, pitch: str | None = None) -> list[str]:
    """Letters of the options consistent with what one modality observed (colour or pitch)."""
    out = []
    for letter, text in zip(LETTERS, item.choices):
        if colour is not None and f"a {colour} screen" not in text:
            continue
        if pitch is not None and f"a {pitch} tone" not in text:
            continue
        out.append(letter)
    return out
