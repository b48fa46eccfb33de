"""Caption quality: COCO BLEU-4 and CIDEr, and exact attribute accuracy through the world parser.

BLEU and CIDEr come from pycocoevalcap's own scorers (`Bleu(4)`, `Cider()`), called directly. The COCO
pipeline normally tokenises with `PTBTokenizer`, which shells out to Java; we tokenise in Python instead
(lowercase, split on anything that is not a letter or digit, punctuation dropped), which on the world's
captions gives the same tokens. CIDEr's IDF comes from the evaluated references, so scores on a small
set are comparable between our variants but not with published COCO numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import pandas as pd

from synth2.diversity import tokenize
from synth2.errors import Synth2Error
from synth2.world.parser import parse

SCORED_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position")


def coco_tokenize(text: str) -> str:
    """Lowercase words joined by single spaces: the input format pycocoevalcap's scorers expect."""
    return " ".join(tokenize(text))


def coco_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr(-D as in pycocoevalcap's `Cider`) of one prediction per id.

    Every prediction id needs references and vice versa. Returns {"bleu4", "cider"} as floats.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if not predictions:
        raise Synth2Error("no predictions to score")
    if set(predictions) != set(references):
        missing = set(predictions) ^ set(references)
        raise Synth2Error(
            f"predictions and references must cover the same ids; {len(missing)} differ, "
            f"e.g. {sorted(map(str, missing))[:3]}"
        )
    res = {key: [coco_tokenize(predictions[key])] for key in predictions}
    gts = {key: [coco_tokenize(r) for r in references[key]] for key in predictions}
    empty = [key for key, refs in gts.items() if not refs]
    if empty:
        raise Synth2Error(f"{len(empty)} ids have no reference captions, e.g. {empty[0]!r}")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose=1 (the default) prints to stdout
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


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
