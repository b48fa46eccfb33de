"""Scoring a VLM variant: its greedy captions of the validation and test images, scored by the profile
overall, on seen and on unseen images, with per-image rows.

evaluate scores each of its variants' captions with `score_predictions`; synth2.extra_variant scores a
variant outside that stage (the pixel path's) with the same function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synth2 import paths
from synth2.embeddings import aligned_embeddings
from synth2.io import read_parquet, require_rows

EVALUATION_SPLITS = {"val": (paths.VAL, paths.VAL_EMBEDDINGS), "test": (paths.TEST, paths.TEST_EMBEDDINGS)}


def subset_masks(table: pd.DataFrame) -> dict[str, np.ndarray]:
    seen = table["seen"].to_numpy(bool)
    return {"overall": np.ones(len(table), bool), "seen": seen, "unseen": ~seen}


def read_evaluation_splits(profile) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """{split: (its table with the profile's columns, its image embeddings row-aligned)}."""
    splits = {}
    for split, (table_path, embeddings_path) in EVALUATION_SPLITS.items():
        table = read_parquet(table_path, columns=list(profile.TEST_COLUMNS))
        require_rows(table, table_path, ["references"])
        splits[split] = (table, aligned_embeddings(embeddings_path, table["image_id"].to_numpy()))
    return splits


def score_predictions(
    profile, variant: str, split: str, table: pd.DataFrame, predictions: list[str]
) -> tuple[dict, list[pd.DataFrame]]:
    """One variant's captions of one split scored by the profile, overall, on seen and on unseen images:
    ({subset: scores}, per-image frames in evaluate's per_image format)."""
    scores, per_image = {}, []
    for subset, mask in subset_masks(table).items():
        if not mask.any():
            continue  # a subset with no image is not scored
        chosen = [p for p, m in zip(predictions, mask) if m]
        scores[subset], image_scores = profile.score(chosen, table[mask].reset_index(drop=True))
        per_image.append(image_scores.assign(split=split, subset=subset, variant=variant))
    return scores, per_image
