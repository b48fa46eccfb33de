"""Read a caption of the world's grammar back into scene attributes.

Keyword-based on purpose: it reads both caption styles and any reordering an LM produces, so that
evaluation scores what a caption says rather than how it says it. The relation phrase is found first,
because position words ("left") also occur inside relations ("to the left of").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd

from synth2.world.scenes import COLOURS, SHAPES

COLOUR_WORDS = {c: c for c in COLOURS} | {"violet": "purple"}
SHAPE_WORDS = {s: s for s in SHAPES}
SIZE_WORDS = {"small": "small", "tiny": "small", "large": "large", "big": "large"}
VERTICAL_WORDS = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
HORIZONTAL_WORDS = {"left": "left", "right": "right"}
CENTER_WORDS = {"center", "centre", "middle"}
RELATION_PATTERN = re.compile(
    r"\b(?P<rel>(?:to|on) the left of|(?:to|on) the right of|above|over|below|under|beneath)\b"
)
RELATION_WORDS = {
    "to the left of": "left of",
    "on the left of": "left of",
    "to the right of": "right of",
    "on the right of": "right of",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
}


@dataclass(frozen=True)
class ParsedCaption:
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    colour2: str | None = None
    shape2: str | None = None
    relation: str | None = None

    @property
    def is_valid(self) -> bool:
        """The caption names at least a colour and a shape: it describes something in the world."""
        return self.colour is not None and self.shape is not None

    @property
    def combo(self) -> str | None:
        return f"{self.colour} {self.shape}" if self.is_valid else None


def _first(words: list[str], vocabulary: dict[str, str]) -> str | None:
    return next((vocabulary[w] for w in words if w in vocabulary), None)


def _position(words: list[str]) -> str | None:
    vertical = _first(words, VERTICAL_WORDS)
    horizontal = _first(words, HORIZONTAL_WORDS)
    if vertical and horizontal:
        return f"{vertical} {horizontal}"
    if vertical or horizontal:
        return vertical or horizontal
    return "center" if any(w in CENTER_WORDS for w in words) else None


def parse(text: str) -> ParsedCaption:
    text = text.lower()
    relation = None
    second: list[str] = []
    match = RELATION_PATTERN.search(text)
    if match:
        relation = RELATION_WORDS[match.group("rel")]
        second = re.findall(r"[a-z]+", text[match.end() :])
        text = text[: match.start()]
    words = re.findall(r"[a-z]+", text)
    return ParsedCaption(
        colour=_first(words, COLOUR_WORDS),
        shape=_first(words, SHAPE_WORDS),
        size=_first(words, SIZE_WORDS),
        position=_position(words),
        colour2=_first(second, COLOUR_WORDS) if relation else None,
        shape2=_first(second, SHAPE_WORDS) if relation else None,
        relation=relation,
    )


ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in fields(ParsedCaption))


def caption_labels(captions: Sequence[str]) -> pd.DataFrame:
    """One row per caption: the parsed ATTRIBUTES (None where absent), `concept` and `is_valid`.

    `concept` is the first object's "colour shape", None when the parser cannot read the caption.
    Each distinct caption is parsed once. This is the world's labeller for caption balancing.
    """
    cache: dict[str, dict[str, object]] = {}
    rows = []
    for caption in captions:
        if caption not in cache:
            parsed = parse(caption)
            row: dict[str, object] = {name: getattr(parsed, name) for name in ATTRIBUTES}
            row["concept"] = parsed.combo
            row["is_valid"] = parsed.is_valid
            cache[caption] = row
        rows.append(cache[caption])
    return pd.DataFrame(rows, columns=[*ATTRIBUTES, "concept", "is_valid"]).astype(
        {name: object for name in (*ATTRIBUTES, "concept")}
    )
