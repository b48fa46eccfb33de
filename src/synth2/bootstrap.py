"""Bootstrap intervals of a difference of means over paired per-image values, with a fixed seed so that the
same values always give the same interval. `synth2 study` uses it over seeds and images; the registry uses
it over validation images to decide whether a new champion beats the current one (synth2.tracking.champion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def hierarchical_bootstrap(
    per_seed: Sequence[tuple[np.ndarray, np.ndarray]], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over seeds, resampling seeds, then images within each seed.

    `per_seed[i]` holds the per-image values (a, b) of seed i, paired by image.
    """
    rng = np.random.default_rng(seed)
    differences = [a - b for a, b in per_seed]
    estimates = np.empty(samples)
    for k in range(samples):
        chosen = rng.integers(len(differences), size=len(differences))
        estimates[k] = np.mean(
            [differences[i][rng.integers(len(differences[i]), size=len(differences[i]))].mean() for i in chosen]
        )
    low, high = np.quantile(estimates, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over images, `a[i]` and `b[i]` scoring the same image: the
    hierarchical bootstrap of a single seed."""
    return hierarchical_bootstrap([(np.asarray(a, float), np.asarray(b, float))], samples, seed)
