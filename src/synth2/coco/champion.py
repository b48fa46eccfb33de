"""Which champion metrics the coco profile can score: SUBSET.cider only. The champion takes the registry
alias on a bootstrap over validation images, which needs a score per image: BLEU-4 is a corpus score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synth2.params import ParamsError
from synth2.pipeline import SUBSETS

METRICS = ("cider",)  # what the coco profile's `score` returns for each image of a subset


def subsets_with_images(seen: np.ndarray) -> list[str]:
    has = {"overall": len(seen) > 0, "seen": bool(seen.any()), "unseen": bool((~seen).any())}
    return [subset for subset in SUBSETS if has[subset]]


def check_champion_metric(key: str, val: pd.DataFrame | None) -> None:
    """`tracking.champion_metric` must be SUBSET.cider as evaluate scores it per validation image: no BLEU-4
    (a corpus score), no attribute accuracy (that needs the shapes world), and, once the data exist, no
    subset without validation images.
    "unseen" images name a class no training caption names; with thousands of COCO training images every
    class is named, so `unseen.*` is usually empty."""
    subsets = SUBSETS if val is None else subsets_with_images(val["seen"].to_numpy(bool))
    available = [f"{subset}.{metric}" for subset in subsets for metric in METRICS]
    if key in available:
        return
    subset, _, metric = key.partition(".")
    why = (
        f"the validation split has no '{subset}' images"
        if subset in SUBSETS and metric in METRICS
        else "the coco profile scores CIDEr per image, which the champion's bootstrap needs (BLEU-4 is a corpus "
        "score; attribute accuracy needs the shapes world)"
    )
    raise ParamsError(f"tracking.champion_metric: '{key}': {why}; pick one of {', '.join(available)}")
