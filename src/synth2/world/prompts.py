"""The world's caption-LM training examples: text-corpus captions behind the concept prompts they answer.

A concept is the caption's colour-shape combination ("red star"), its colour ("red") or its shape
("star"), one third each, so the LM follows all three kinds of prompt. A fraction `unprompted_fraction`
uses the bare unprompted template: those examples teach the corpus' own skewed caption distribution,
which the unbalanced ablation samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synth2.models.caption_lm import CaptionExample

CONCEPT_KINDS = ("combo", "colour", "shape")


def concept_text(colour: str, shape: str, kind: str) -> str:
    """The concept phrase a prompt names: "red star", "red" or "star"."""
    if kind == "combo":
        return f"{colour} {shape}"
    if kind == "colour":
        return colour
    if kind == "shape":
        return shape
    raise ValueError(f"unknown concept kind {kind!r}; expected one of {CONCEPT_KINDS}")


def build_training_examples(
    captions: Sequence[str],
    colours: Sequence[str],
    shapes: Sequence[str],
    prompt_template: str,
    unprompted_template: str,
    unprompted_fraction: float,
    rng: np.random.Generator,
) -> list[CaptionExample]:
    """One example per corpus caption; `colours`/`shapes` are the caption's (first object's) attributes."""
    if not len(captions) == len(colours) == len(shapes):
        raise ValueError(f"lengths differ: {len(captions)} captions, {len(colours)} colours, {len(shapes)} shapes")
    n = len(captions)
    unprompted = rng.random(n) < unprompted_fraction
    kinds = rng.integers(0, len(CONCEPT_KINDS), size=n)
    examples = []
    for caption, colour, shape, bare, kind in zip(captions, colours, shapes, unprompted, kinds):
        if bare:
            prompt = unprompted_template
        else:
            prompt = prompt_template.format(concepts=concept_text(str(colour), str(shape), CONCEPT_KINDS[kind]))
        examples.append(CaptionExample(prompt=prompt, caption=str(caption).strip()))
    return examples


def styled(examples: list[CaptionExample], control_token: str) -> list[CaptionExample]:
    """The same examples behind a style control token: "<human> concepts: red star caption:"."""
    return [CaptionExample(prompt=f"{control_token} {e.prompt}", caption=e.caption) for e in examples]
