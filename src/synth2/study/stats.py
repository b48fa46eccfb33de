"""A study's statistics, per variant, split (val, test), subset (overall, seen, unseen) and metric:
mean, standard deviation and a 95% t-interval over seeds; paired differences by seed (synth - baseline;
balanced - unbalanced, i.e. synth - synth_unbalanced) with a 95% t-interval and, for the metrics that are
means over images (CIDEr, attribute accuracy), a 95% hierarchical bootstrap interval over seeds, then
images within each seed. Tuning happens on `val`; claims come from `test`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from synth2.bootstrap import CONFIDENCE, hierarchical_bootstrap
from synth2.pipeline import COMPARISONS as DIFFERENCES  # (name, variant, minus variant)
from synth2.pipeline import SPLITS, SUBSETS
from synth2.pipeline import VARIANT_NAMES as VARIANTS


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the mean (NaN bounds with fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    low, high = t_interval(values)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(np.mean(values)), "std": std, "ci95": [low, high], "n": len(values), "values": values}


def comparisons_present(
    results: Mapping[int, tuple[dict, pd.DataFrame]], comparisons: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The comparisons whose variant every seed scored (e.g. the pixel path's, which runs only when asked)."""
    return [c for c in comparisons if all(c[1] in metrics["test"] for metrics, _ in results.values())]


def aggregate(
    results: Mapping[int, tuple[dict, pd.DataFrame]],
    variants: Sequence[str] = VARIANTS,
    differences_of: Sequence[tuple[str, str, str]] = DIFFERENCES,
) -> dict[str, Any]:
    """Per variant/split/subset/metric summaries and the paired differences, over the seeds of `results`
    (`variants` and `differences_of`: evaluate's, plus any extra variant the experiments scored)."""
    seeds = sorted(results)
    summary: dict[str, Any] = {}
    for split in SPLITS:
        for variant in variants:
            for subset in SUBSETS:
                metrics = sorted({m for s in seeds for m in results[s][0][split][variant].get(subset, {})})
                for metric in metrics:
                    values = [results[s][0][split][variant][subset][metric] for s in seeds]
                    summary.setdefault(split, {}).setdefault(variant, {}).setdefault(subset, {})[metric] = summarise(
                        values
                    )
    differences: dict[str, Any] = {}
    for label, a, b in differences_of:
        for split in SPLITS:
            for subset in SUBSETS:
                for metric in summary[split][a].get(subset, {}):
                    diffs = [
                        results[s][0][split][a][subset][metric] - results[s][0][split][b][subset][metric] for s in seeds
                    ]
                    base = summary[split][b][subset][metric]["mean"]
                    entry = summarise(diffs) | {"relative_to_minus": float(np.mean(diffs)) / base if base else None}
                    pairs = _paired_images(results, seeds, split, subset, metric, a, b)
                    if pairs:
                        entry["bootstrap_ci95"] = list(hierarchical_bootstrap(pairs))
                    differences.setdefault(label, {}).setdefault(split, {}).setdefault(subset, {})[metric] = entry
    return {"seeds": seeds, "summary": summary, "differences": differences}


def _paired_images(
    results: Mapping[int, tuple[dict, pd.DataFrame]],
    seeds: list[int],
    split: str,
    subset: str,
    metric: str,
    a: str,
    b: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-image values of variants a and b, paired by image, for every seed (empty: not a per-image metric)."""
    pairs = []
    for s in seeds:
        frame = results[s][1]
        if metric not in frame:
            return []
        rows = frame[(frame["split"] == split) & (frame["subset"] == subset)]
        wide = rows.pivot_table(index="image_id", columns="variant", values=metric)
        pairs.append((wide[a].to_numpy(), wide[b].to_numpy()))
    return pairs
