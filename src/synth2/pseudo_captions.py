"""Which of a VLM's captions of unlabelled images a self-improvement round keeps, without ground truth.

The agreement filter asks the prior (trained on the human pairs only) what image embedding a caption
describes, and keeps the captions whose answer points the same way as the captioned image's own embedding:
cosine of the two, both centred on the human pairs' mean embedding (every embedding shares a large common
part, which would make all cosines look alike). The top `keep_fraction` are kept. Nothing here reads a
label: the filter sees captions and embeddings only, so a world's ground-truth columns riding along in the
table cannot change what it keeps (tests/test_self_improve.py scrambles them to prove it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

CaptionEmbedder = Callable[[list[str]], np.ndarray]  # captions -> the prior's image embeddings [N, D]


def agreement(described: np.ndarray, images: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Centred cosine of each caption's prior embedding and its image's embedding, row by row."""
    a, b = described - centre, images - centre
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def top_rows(scores: np.ndarray, keep_fraction: float) -> np.ndarray:
    """The rows of the best `keep_fraction` of `scores` (at least one), in their original order; ties
    keep the earlier row, so the choice is deterministic."""
    keep = max(1, round(len(scores) * keep_fraction)) if len(scores) else 0
    best = np.argsort(-scores, kind="stable")[:keep]
    return np.sort(best)


def filter_pseudo_captions(
    pairs: pd.DataFrame,
    image_embeddings: np.ndarray,
    describe: CaptionEmbedder,
    centre: np.ndarray,
    method: str,
    keep_fraction: float,
) -> pd.DataFrame:
    """The kept rows of `pairs` (`caption`, any other column riding along; index kept, so a RangeIndex
    gives each kept row's position), with their `agreement`; `image_embeddings` row for row. method `none`
    keeps every row (agreement still reported)."""
    captions = pairs["caption"].astype(str).tolist()
    scores = agreement(describe(captions), image_embeddings, centre)
    rows = top_rows(scores, keep_fraction) if method == "agreement" else np.arange(len(pairs))
    return pairs.iloc[rows].assign(agreement=scores[rows])


def training_pseudo_pairs(
    mode: str, earlier: tuple[pd.DataFrame, np.ndarray], kept: tuple[pd.DataFrame, np.ndarray]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The pseudo pairs a round trains on, (table, image embeddings) row for row: `accumulate`, the pairs
    the previous VLM trained on followed by this round's kept ones; `replace`, this round's kept ones only."""
    (earlier_table, earlier_emb), (kept_table, kept_emb) = earlier, kept
    if mode == "replace" or not len(earlier_table):
        return kept_table.reset_index(drop=True), kept_emb
    return pd.concat([earlier_table, kept_table], ignore_index=True), np.concatenate([earlier_emb, kept_emb])
