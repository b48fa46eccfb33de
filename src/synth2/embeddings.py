"""Image embeddings written by `image_encoder`, looked up by image id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synth2.errors import Synth2Error
from synth2.io import read_tensors


def aligned_embeddings(path: Path, image_ids: np.ndarray) -> np.ndarray:
    """Rows of the embedding file at `path` in the order of `image_ids`."""
    stored = read_tensors(path)
    row_of = {int(i): r for r, i in enumerate(stored["image_id"])}
    missing = [int(i) for i in image_ids if int(i) not in row_of]
    if missing:
        raise Synth2Error(
            f"{path} lacks {len(missing)} image ids (e.g. {missing[:3]}); re-run 'dvc repro image_encoder'"
        )
    return stored["embeddings"][[row_of[int(i)] for i in image_ids]]
