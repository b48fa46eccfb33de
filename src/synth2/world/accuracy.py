"""Exact attribute accuracy of captions, read back by the world parser: what a caption says, not how."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from synth2.errors import Synth2Error
from synth2.world.parser import parse

SCORED_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position")


def attribute_hits(predictions: Sequence[str], truths: Sequence[object] | pd.DataFrame) -> pd.DataFrame:
    """One row per prediction: whether its parsed colour, shape, size and position match the true scene,
    "colour_shape" (both colour and shape right: the compositional test of held-out pairs) and "all"
    (all four right). `truths[i]` is Scene-like: an object with those attributes, a mapping, or a
    DataFrame row. An unparseable prediction (no colour or no shape) is wrong on every attribute.
    """
    rows = truths.to_dict("records") if isinstance(truths, pd.DataFrame) else list(truths)
    if len(predictions) != len(rows):
        raise Synth2Error(f"{len(predictions)} predictions but {len(rows)} true scenes")
    hits = []
    for prediction, truth in zip(predictions, rows, strict=True):
        parsed = parse(str(prediction))
        row = {name: parsed.is_valid and getattr(parsed, name) == _field(truth, name) for name in SCORED_ATTRIBUTES}
        row["colour_shape"] = row["colour"] and row["shape"]
        row["all"] = all(row[name] for name in SCORED_ATTRIBUTES)
        hits.append(row)
    return pd.DataFrame(hits, columns=[*SCORED_ATTRIBUTES, "colour_shape", "all"], dtype=bool)


def attribute_accuracy(predictions: Sequence[str], truths: Sequence[object] | pd.DataFrame) -> dict[str, float]:
    """Share of predictions right on each attribute (see `attribute_hits`)."""
    hits = attribute_hits(predictions, truths)
    if hits.empty:
        raise Synth2Error("no predictions to score")
    return {name: float(hits[name].mean()) for name in hits.columns}


def _field(truth: object, name: str) -> object:
    # Item access first: a pandas Series has a `.size` attribute that is not the scene's size.
    if isinstance(truth, (Mapping, pd.Series)):
        return truth[name]
    return getattr(truth, name)
