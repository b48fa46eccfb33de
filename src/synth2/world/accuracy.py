"""Exact attribute accuracy of captions, read back by the world parser: what a caption says, not how."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from synth2.errors import Synth2Error
from synth2.world.parser import parse

SCORED_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position")


def attribute_accuracy(predictions: Sequence[str], truths: Sequence[object] | pd.DataFrame) -> dict[str, float]:
    """Share of predictions whose parsed colour, shape, size and position match the true scene.

    `truths[i]` is Scene-like: an object with those attributes, a mapping, or a DataFrame row (a
    DataFrame is read row by row). "colour_shape" needs both colour and shape right; "all" counts a
    prediction right only when all four match. An
    unparseable prediction (no colour or no shape) counts as wrong on every attribute.
    """
    rows = truths.to_dict("records") if isinstance(truths, pd.DataFrame) else list(truths)
    if len(predictions) != len(rows):
        raise Synth2Error(f"{len(predictions)} predictions but {len(rows)} true scenes")
    if not rows:
        raise Synth2Error("no predictions to score")
    correct = {name: 0 for name in (*SCORED_ATTRIBUTES, "colour_shape", "all")}
    for prediction, truth in zip(predictions, rows, strict=True):
        parsed = parse(str(prediction))
        hits = [parsed.is_valid and getattr(parsed, name) == _field(truth, name) for name in SCORED_ATTRIBUTES]
        for name, hit in zip(SCORED_ATTRIBUTES, hits, strict=True):
            correct[name] += hit
        # The compositional test: both words of the held-out colour-shape pair right at once.
        correct["colour_shape"] += hits[0] and hits[1]
        correct["all"] += all(hits)
    return {name: count / len(rows) for name, count in correct.items()}


def _field(truth: object, name: str) -> object:
    # Item access first: a pandas Series has a `.size` attribute that is not the scene's size.
    if isinstance(truth, (Mapping, pd.Series)):
        return truth[name]
    return getattr(truth, name)
