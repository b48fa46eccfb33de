"""Which COCO concepts (classes) a caption names, and the balancing labels built on that.

Concept mentions are whole-word, case-insensitive matches that allow a plural "s"/"es" ("dogs",
"buses"), so a caption written for "dog" counts when it says "two dogs".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

import pandas as pd


@cache
def _mention_pattern(concept: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(w) for w in concept.split())
    return re.compile(rf"\b{words}(?:s|es)?\b", re.IGNORECASE)


def mentions(text: str, concept: str) -> bool:
    return bool(_mention_pattern(concept).search(str(text)))


def mentioned_concepts(text: str, concepts: Iterable[str]) -> list[str]:
    return [c for c in concepts if mentions(text, c)]


def named_concepts(texts: pd.Series, concepts: Iterable[str]) -> set[str]:
    """The concepts that at least one of `texts` names."""
    texts = texts.astype(str)
    return {c for c in concepts if texts.str.contains(_mention_pattern(c)).any()}


def first_mention(text: str, concepts: Sequence[str]) -> str | None:
    """The concept named earliest in `text` (longest name first at a tie: "hot dog" over "dog")."""
    best: tuple[int, int, str] | None = None
    for concept in concepts:
        match = _mention_pattern(concept).search(str(text))
        if match and (best is None or (match.start(), -len(concept)) < best[:2]):
            best = (match.start(), -len(concept), concept)
    return None if best is None else best[2]


def _labels(concepts: Sequence[str | None], valid: Sequence[bool]) -> pd.DataFrame:
    """A caption's only label in this profile is its class (see synth2.balancing.Labeller)."""
    return pd.DataFrame({"concept": pd.Series(list(concepts), dtype=object), "is_valid": list(valid)})


def prompt_labeller(require_mention: bool):
    """Balancing labels for prompted captions: the concept they were prompted with, valid when they name it
    (or always, without `require_mention`)."""

    def label(work: pd.DataFrame) -> pd.DataFrame:
        concepts = work["concept"].tolist()
        valid = [c is not None and (not require_mention or mentions(t, c)) for t, c in zip(work["caption"], concepts)]
        return _labels(concepts, valid)

    return label


def mention_labeller(concepts: Sequence[str]):
    """Balancing labels for captions without a prompt: the first concept they name, if any."""

    def label(work: pd.DataFrame) -> pd.DataFrame:
        found = [first_mention(t, concepts) for t in work["caption"]]
        return _labels(found, [c is not None for c in found])

    return label
