"""The caption grammar: how annotators ("human") and the text corpus ("corpus") describe a scene.

The two styles overlap only partly, as an LLM's style differs from annotators': they share one
template, and the corpus has templates and synonyms of its own. The parser reads both.
"""

from __future__ import annotations

import numpy as np

from synth2.world.scenes import Scene

HUMAN_TEMPLATES: tuple[str, ...] = (
    "{a_size} {colour} {shape} in the {position}",
    "there is {a_size} {colour} {shape} at the {position}",
    "{a_colour} {shape}, {size}, placed in the {position}",
    "{size} {colour} {shape} located in the {position}",
    "the image shows {a_size} {colour} {shape} in the {position}",
)
CORPUS_TEMPLATES: tuple[str, ...] = (
    "{a_size} {colour} {shape} in the {position}",  # shared with the annotators
    "an image of {a_size} {colour} {shape} near the {position}",
    "a picture showing {a_colour} {shape} of {size} size in the {position}",
    "{size} {colour} {shape} sitting in the {position}",
)
HUMAN_RELATIONS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
CORPUS_RELATIONS = {"left of": "on the left of", "right of": "on the right of", "above": "over", "below": "under"}
# Corpus-only synonyms, each used half of the time.
CORPUS_SYNONYMS = {
    "small": "tiny",
    "large": "big",
    "purple": "violet",
    "top": "upper",
    "bottom": "lower",
    "center": "middle",
}
STYLES = ("human", "corpus")


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def templates(style: str) -> tuple[str, ...]:
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    return HUMAN_TEMPLATES if style == "human" else CORPUS_TEMPLATES


def _words(scene: Scene, style: str, rng: np.random.Generator | None) -> dict[str, str]:
    def word(w: str) -> str:
        if style == "corpus" and w in CORPUS_SYNONYMS and rng is not None and rng.random() < 0.5:
            return CORPUS_SYNONYMS[w]
        return w

    size, colour = word(scene.size), word(scene.colour)
    position = " ".join(word(w) for w in scene.position.split())
    return {
        "size": size,
        "colour": colour,
        "shape": scene.shape,
        "position": position,
        "a_size": with_article(size),
        "a_colour": with_article(colour),
    }


def caption(scene: Scene, style: str, rng: np.random.Generator | None = None, template: int | None = None) -> str:
    """Describe `scene` in `style`; `template` picks one, else `rng` does (else the first)."""
    options = templates(style)
    if template is None:
        template = int(rng.integers(len(options))) if rng is not None else 0
    text = options[template].format(**_words(scene, style, rng))
    if scene.has_second:
        relations = HUMAN_RELATIONS if style == "human" else CORPUS_RELATIONS
        colour2 = _words(Scene(scene.colour2, scene.shape2, "small", "center"), style, rng)["colour"]
        text += f" {relations[scene.relation]} {with_article(colour2)} {scene.shape2}"
    return text
