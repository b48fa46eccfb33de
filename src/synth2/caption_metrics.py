"""Caption quality: COCO BLEU-4 and CIDEr (the world's exact attribute accuracy is synth2.world.accuracy).

BLEU and CIDEr come from pycocoevalcap's own scorers (`Bleu(4)`, `Cider()`), called directly. The COCO
pipeline normally tokenises with `PTBTokenizer`, which shells out to Java; we tokenise in Python instead
(lowercase, split on anything that is not a letter or digit, punctuation dropped), which on the world's
captions gives the same tokens. CIDEr's IDF comes from the evaluated references, so scores on a small
set are comparable between our variants but not with published COCO numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from synth2.diversity import tokenize
from synth2.errors import Synth2Error


def coco_tokenize(text: str) -> str:
    """Lowercase words joined by single spaces: the input format pycocoevalcap's scorers expect."""
    return " ".join(tokenize(text))


def coco_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr(-D as in pycocoevalcap's `Cider`) of one prediction per id.

    Every prediction id needs references and vice versa. Returns {"bleu4", "cider"} as floats.
    """
    return scores_with_cider_per_id(predictions, references)[0]


def scores_with_cider_per_id(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> tuple[dict[str, float], dict[Hashable, float]]:
    """`coco_scores` and each id's own CIDEr (their mean is the corpus CIDEr; the IDF comes from the
    whole set), which lets a study bootstrap over images."""
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
    cider, per_id = Cider().compute_score(gts, res)  # per-id scores in the order of gts' keys
    return {"bleu4": float(bleu[3]), "cider": float(cider)}, dict(zip(gts, map(float, per_id)))
