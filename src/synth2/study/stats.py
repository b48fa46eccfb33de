"""A study's statistics, per variant, split (val, test), subset (overall, seen, unseen) and metric:
mean, standard deviation and a 95% t-interval over seeds; paired differences by seed (synth - baseline;
balanced - unbalanced, i.e. synth - synth_unbalanced) with a 95% t-interval and, for the metrics that are
means over images (CIDEr, attribute accuracy), a 95% hierarchical bootstrap interval over seeds, then
images within each seed. A sweep adds each value against the first, per variant, paired by seed
(`sweep_differences`: e.g. self_improve.mode=accumulate,replace). Tuning happens on `val`; claims come
from `test`."""

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


def sweep_differences(
    results_by_value: Mapping[Any, Mapping[int, tuple[dict, pd.DataFrame]]], variants: Sequence[str]
) -> dict[str, Any]:
    """Each later value of a sweep against its first, for every variant, paired by seed (same seed: same
    world, same evaluation images): differences labelled "VARIANT: VALUE - FIRST", as `aggregate`'s. A
    variant that every value scored identically in every seed (one the swept key does not reach, e.g. the
    baseline in a sweep of self_improve.mode) is left out; so is one a value did not score."""
    values = list(results_by_value)
    seeds = sorted(results_by_value[values[0]])
    merged: dict[int, tuple[dict, pd.DataFrame]] = {}
    for seed in seeds:
        metrics: dict[str, dict[str, Any]] = {split: {} for split in SPLITS}
        frames = []
        for value, results in results_by_value.items():
            scores, per_image = results[seed]
            for split in SPLITS:
                for variant in variants:
                    if variant in scores[split]:
                        metrics[split][f"{variant}@{value}"] = scores[split][variant]
            frames.append(per_image.assign(variant=per_image["variant"] + f"@{value}"))
        merged[seed] = (metrics, pd.concat(frames, ignore_index=True))

    def differs(variant: str, value: Any) -> bool:
        pair = (f"{variant}@{value}", f"{variant}@{values[0]}")
        scored = all(name in merged[s][0][split] for s in seeds for split in SPLITS for name in pair)
        return scored and any(
            merged[s][0][split][pair[0]] != merged[s][0][split][pair[1]] for s in seeds for split in SPLITS
        )

    comparisons = [
        (f"{variant}: {value} - {values[0]}", f"{variant}@{value}", f"{variant}@{values[0]}")
        for value in values[1:]
        for variant in variants
        if differs(variant, value)
    ]
    if not comparisons:
        return {}
    compared = sorted({name for _, a, b in comparisons for name in (a, b)})
    return aggregate(merged, compared, comparisons)["differences"]


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
