"""Which champion metrics the coco profile can score: SUBSET.METRIC, CIDEr and BLEU-4 only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synth2.params import ParamsError
from synth2.pipeline import SUBSETS

METRICS = ("bleu4", "cider")  # what the coco profile's `score` returns for each subset of images


def subsets_with_images(seen: np.ndarray) -> list[str]:
    has = {"overall": len(seen) > 0, "seen": bool(seen.any()), "unseen": bool((~seen).any())}
    return [subset for subset in SUBSETS if has[subset]]


def check_champion_metric(key: str, val: pd.DataFrame | None) -> None:
    """`tracking.champion_metric` must be SUBSET.METRIC as evaluate scores it on validation: no attribute
    accuracy (that needs the shapes world), and, once the data exist, no subset without validation images.
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
        else "the coco profile scores CIDEr and BLEU-4 only (attribute accuracy needs the shapes world)"
    )
    raise ParamsError(f"tracking.champion_metric: '{key}': {why}; pick one of {', '.join(available)}")
