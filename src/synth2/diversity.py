"""How diverse and how balanced a set of captions is.

`diversity_report` measures a caption set on three levels: strings (unique ratio, distinct n-grams),
concepts (entropy and max/min ratio of the colour-shape distribution, coverage of the world's concept
set) and meaning (mean pairwise cosine distance of sentence embeddings, coverage of embedding
clusters). The balance stage reports it for the balanced and the unbalanced selection so the effect of
balancing is a number, and the gate checks coverage and the max/min ratio.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase words; punctuation and whitespace only separate them."""
    return _WORD.findall(str(text).lower())


def distinct_n(captions: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all captions (0.0 when there are no n-grams)."""
    grams: Counter[tuple[str, ...]] = Counter()
    for caption in captions:
        words = tokenize(caption)
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def entropy_bits(counts: Sequence[int] | np.ndarray) -> float:
    """Shannon entropy, in bits, of the distribution given by non-negative counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean of 1 - cosine over all unordered pairs of distinct rows (0.0 for fewer than two rows).

    Exact and O(N·d) rather than O(N²·d): for unit vectors v_i, sum over i != j of v_i·v_j equals
    ||sum_i v_i||² - N, so no pair matrix (and no sampling) is needed.

    The sums over rows and the squared norm are `math.fsum` (correctly rounded) and the row norms numpy's
    fixed-order pairwise sums (no BLAS; unchanged with numpy's AVX2/AVX512 loops disabled), so no
    summation order is left for a BLAS kernel, a SIMD width or a thread count to change: equal embeddings
    give a bit-identical value (0.16 s for 3000 x 384 on this machine, most of it `tolist`).
    `total @ total` (a BLAS ddot) did not: on 3000 MiniLM vectors OpenBLAS's Sandybridge kernel gave
    0.47922063241356516, SkylakeX, Haswell and Prescott 0.47922063241356505 (the 17th-digit drift of
    metrics/diversity.json between two machines). What no distance computation can fix is embeddings
    that differ: MiniLM's own vectors were bit-identical across BLAS kernels and 1 or 2 torch threads,
    but torch's AVX2 or default CPU capability instead of AVX512 moved components by up to 2e-7 and this
    value from 0.47922063241 to 0.47922063220 / 0.47922063230, so between CPUs that run different torch
    kernels only its first 9 digits agree.
    """
    x = _unit_rows(embeddings)
    n = x.shape[0]
    if n < 2:
        return 0.0
    total = [math.fsum(column) for column in x.T.tolist()]
    mean_cos = (math.fsum(t * t for t in total) - n) / (n * (n - 1))
    return 1.0 - mean_cos


def fit_kmeans(embeddings: np.ndarray, n_clusters: int, seed: int, n_init: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded KMeans on unit-normalised embeddings: (labels [N], centers [k, d]).

    k is capped at the number of rows so tiny sets still cluster. Shared by balancing and by
    stages that need one clustering for several caption sets (pass its centers to
    `diversity_report` so coverage is comparable between sets).
    """
    from sklearn.cluster import KMeans

    x = _unit_rows(embeddings)
    k = max(1, min(int(n_clusters), x.shape[0]))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def assign_clusters(embeddings: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest center (Euclidean, as KMeans) for each row."""
    x = _unit_rows(embeddings).astype(np.float32)
    c = np.asarray(centers, dtype=np.float32)
    # ||x - c||² = ||x||² - 2 x·c + ||c||²; ||x||² is the same for every center.
    scores = x @ c.T - 0.5 * (c * c).sum(axis=1)[None, :]
    return scores.argmax(axis=1).astype(np.int64)


def diversity_report(
    captions: Sequence[str],
    concepts: Sequence[str | None],
    embeddings: np.ndarray,
    all_concepts: Sequence[str],
    cluster_labels: Sequence[int] | np.ndarray | None = None,
    n_clusters: int | None = None,
    cluster_centers: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """Diversity and balance of one caption set; every value is JSON-ready.

    Inputs: `captions[i]` has concept `concepts[i]` ("red star"; None or "" when unknown) and
    sentence embedding `embeddings[i]`. Clusters come from one of `cluster_labels` (given; add
    `n_clusters` to count clusters the set misses entirely), `cluster_centers` (nearest center; use one
    clustering shared by the sets you compare, see `fit_kmeans`) or `n_clusters` alone (KMeans fitted on
    this set: coverage is then trivially full, but the cluster entropy is still meaningful). `all_concepts`
    is the concept universe: the profile's concepts (the world's colour x shape set, COCO's classes).

    Keys:
      n: number of captions.
      unique_ratio: distinct caption strings / n (exact string comparison).
      distinct_1, distinct_2: distinct word n-grams / total word n-grams, pooled over all captions
        (words: lowercase alphanumeric runs).
      concept_entropy: Shannon entropy, in bits, of the frequency distribution of the known concepts
        (captions without a concept are left out).
      concept_entropy_normalised: concept_entropy / log2(len(all_concepts)); 1.0 means uniform over
        the whole concept universe.
      concepts_covered, concepts_total: concepts of the universe that occur at least once, and the
        size of the universe; concept_coverage is their ratio.
      max_min_concept_ratio: count of the most frequent / count of the least frequent concept among
        the covered concepts of the universe (1.0 is perfectly balanced; None when none is covered).
      unknown_concept_fraction: fraction of captions whose concept is missing or outside the universe.
      mean_pairwise_distance: mean of 1 - cosine over all pairs of distinct captions (exact).
      n_clusters, clusters_covered: clusters in the clustering used, and how many hold a caption.
      cluster_entropy_normalised: entropy of the caption distribution over clusters / log2(n_clusters).
    """
    n = len(captions)
    if len(concepts) != n or len(embeddings) != n:
        raise ValueError(
            f"captions ({n}), concepts ({len(concepts)}) and embeddings ({len(embeddings)}) must have one row each"
        )
    universe = list(all_concepts)
    report: dict[str, float | int | None] = {
        "n": n,
        "unique_ratio": len(set(captions)) / n if n else 0.0,
        "distinct_1": distinct_n(captions, 1),
        "distinct_2": distinct_n(captions, 2),
    }
    report.update(_concept_stats(concepts, universe))
    report["mean_pairwise_distance"] = mean_pairwise_distance(np.asarray(embeddings))
    report.update(_cluster_stats(np.asarray(embeddings), cluster_labels, n_clusters, cluster_centers, seed))
    return report


def _concept_stats(concepts: Sequence[str | None], universe: list[str]) -> dict[str, float | int | None]:
    known = [c for c in concepts if isinstance(c, str) and c]
    counts = Counter(known)
    in_universe = {c: counts[c] for c in universe if counts[c] > 0}
    n_universe = len(set(universe))
    entropy = entropy_bits(list(counts.values()))
    unknown = len(concepts) - sum(in_universe.values())
    return {
        "concept_entropy": entropy,
        "concept_entropy_normalised": entropy / math.log2(n_universe) if n_universe > 1 else 0.0,
        "concepts_covered": len(in_universe),
        "concepts_total": n_universe,
        "concept_coverage": len(in_universe) / n_universe if n_universe else 0.0,
        "max_min_concept_ratio": (max(in_universe.values()) / min(in_universe.values()) if in_universe else None),
        "unknown_concept_fraction": unknown / len(concepts) if len(concepts) else 0.0,
    }


def _cluster_stats(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    n_clusters: int | None,
    centers: np.ndarray | None,
    seed: int,
) -> dict[str, float | int]:
    if labels is not None:
        if centers is not None:
            raise ValueError("pass cluster_labels or cluster_centers, not both")
        labels = np.asarray(labels, dtype=np.int64)
        # n_clusters beside labels says how many clusters the clustering had (some may be empty here).
        k = int(n_clusters) if n_clusters else (int(labels.max()) + 1 if labels.size else 0)
    elif centers is not None:
        labels = assign_clusters(embeddings, centers) if len(embeddings) else np.zeros(0, np.int64)
        k = int(np.asarray(centers).shape[0])
    elif n_clusters:
        k = int(n_clusters)
        labels = fit_kmeans(embeddings, k, seed)[0] if len(embeddings) else np.zeros(0, np.int64)
    else:
        raise ValueError("pass one of cluster_labels, cluster_centers or n_clusters")
    counts = np.bincount(labels, minlength=k) if labels.size else np.zeros(k, np.int64)
    return {
        "n_clusters": k,
        "clusters_covered": int((counts > 0).sum()),
        "cluster_entropy_normalised": entropy_bits(counts) / math.log2(k) if k > 1 else 0.0,
    }


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    # Callers may hand in embeddings from another model that are not normalised.
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
