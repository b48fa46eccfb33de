"""Synth²'s primary claim as a number: how much human labelling the synthetic pairs save.

For a sweep of the number of human pairs (world.prepare.real_train_size), the **target** is the baseline's
mean at the largest swept size (the full-data baseline). Synth **matches** it at the smallest number of
human pairs where synth's mean curve reaches the target, interpolated linearly on log N between the two
swept sizes that bracket the first crossing (sizes are spaced geometrically, 250, 500, 1000, 2000, and a
metric's growth with data is close to linear in log N there: issue 17's calibration table). The
**savings factor** is largest size ÷ matched size.

* Synth already at or above the target at the smallest size: matched "at or below the smallest size";
  the factor is then at least largest ÷ smallest, and flagged as such (`bound: "at least"`).
* Synth never reaching the target within the sweep: factor None, with the reason in `note` (it would need
  more human pairs than the baseline's full data, or more than the sweep holds).

The 95% interval is a percentile bootstrap over seeds, **paired**: one draw of seeds (with replacement)
is used for both variants and every size, as the seeds are paired in the study (seed s is the same world
and human pairs for baseline and synth, and nested across sizes), and the curves' means, the target and
the crossing are recomputed for each draw. Resampling the variants or the sizes independently would
discard that pairing and overstate the spread (a test holds it). A draw where synth never reaches the
target counts as the smallest factor and one matched at or below the smallest size as the bound, so the
interval's ends report those cases instead of an invented number.

Also, per size: the curves' means with 95% t-intervals over seeds, and the paired synth − baseline gain,
absolute and relative to the baseline's mean (its t-interval scaled by that mean, which is held fixed),
with the sizes at which the relative gain reaches the paper's +17%.

Pure functions of per-seed tables; `data_efficiency` reads them out of a study report's configurations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth2.bootstrap import BOOTSTRAP_SAMPLES, CONFIDENCE
from synth2.study.stats import t_interval

HUMAN_PAIRS_KEY = "world.prepare.real_train_size"
SPLIT = "test"
BASELINE, SYNTH = "baseline", "synth"
METRICS = (("overall", "cider"), ("unseen", "attr_colour_shape"))  # (subset, metric): report keys SUBSET.METRIC
PAPER_RELATIVE_GAIN = 0.17  # Synth² v1: +17% over the baseline

MATCHED, AT_OR_BELOW_SMALLEST, NEVER = "matched", "at or below the smallest size", "never within the sweep"


@dataclass(frozen=True)
class Crossing:
    """Where synth's curve first reaches the target; `factor` None when it never does within the sweep."""

    status: str  # MATCHED, AT_OR_BELOW_SMALLEST or NEVER
    target: float
    matched_at: float | None
    factor: float | None


def crossing(sizes: Sequence[float], baseline_means: Sequence[float], synth_means: Sequence[float]) -> Crossing:
    """The first crossing of the full-data baseline (the last size's baseline mean) by synth's curve.

    `sizes` ascending; the means are per size. Interpolated linearly on log N between the bracketing sizes.
    """
    sizes = [float(n) for n in sizes]
    target, largest = float(baseline_means[-1]), sizes[-1]
    for i, value in enumerate(synth_means):
        if value < target:
            continue
        if i == 0:
            return Crossing(AT_OR_BELOW_SMALLEST, target, sizes[0], largest / sizes[0])
        low, high = float(synth_means[i - 1]), float(value)  # low < target <= high
        fraction = (target - low) / (high - low)
        matched = math.exp(math.log(sizes[i - 1]) + fraction * (math.log(sizes[i]) - math.log(sizes[i - 1])))
        return Crossing(MATCHED, target, matched, largest / matched)
    return Crossing(NEVER, target, None, None)


def savings_factor(
    sizes: Sequence[float],
    baseline: np.ndarray,
    synth: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The savings factor and its paired bootstrap interval over seeds.

    `baseline[i, j]`, `synth[i, j]`: the metric at sizes[i] (ascending) for the j-th seed, the same seed
    in the same column of both tables. Returns {factor, ci95, matched_at, bound, note, target, bootstrap}.
    """
    sizes, baseline, synth = _checked(sizes, baseline, synth)
    point = crossing(sizes, baseline.mean(axis=1), synth.mean(axis=1))
    bound = sizes[-1] / sizes[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(baseline.shape[1], size=(samples, baseline.shape[1]))
    factors, statuses = np.empty(samples), []
    for k, chosen in enumerate(draws):  # the same seeds for both variants and every size
        found = crossing(sizes, baseline[:, chosen].mean(axis=1), synth[:, chosen].mean(axis=1))
        statuses.append(found.status)
        factors[k] = 0.0 if found.factor is None else found.factor  # never: below every factor
    low, high = (
        float(q) for q in np.quantile(factors, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], method="inverted_cdf")
    )
    never, smallest = statuses.count(NEVER) / samples, statuses.count(AT_OR_BELOW_SMALLEST) / samples
    ci95: list[float | None] = [None if low == 0.0 else low, None if high == 0.0 else high]
    interval_notes = []
    if ci95[0] is None:
        interval_notes.append(f"synth does not reach the target within the sweep in {never:.0%} of the resamples")
    if high == bound:
        interval_notes.append(
            f"the upper end is a lower bound (matched at or below the smallest size in {smallest:.0%} of the resamples)"
        )
    return {
        "factor": point.factor,
        "ci95": ci95,
        "matched_at": None if point.matched_at is None else _number(point.matched_at),
        "bound": "at least" if point.status == AT_OR_BELOW_SMALLEST else None,
        "note": "; ".join([_note(point, sizes)] + interval_notes),
        "target": point.target,
        "full_size": _number(sizes[-1]),
        "bootstrap": {"samples": samples, "never_matched": never, "at_or_below_smallest": smallest},
    }


def gains(sizes: Sequence[float], baseline: np.ndarray, synth: np.ndarray) -> list[dict[str, Any]]:
    """Per size: both curves' mean and 95% t-interval over seeds, and the paired gain synth − baseline
    (absolute; relative to the baseline's mean, whose t-interval is the absolute one over that mean)."""
    sizes, baseline, synth = _checked(sizes, baseline, synth)
    rows = []
    for n, base, syn in zip(sizes, baseline, synth, strict=True):
        difference = syn - base  # paired by seed
        mean, ci95 = float(difference.mean()), list(t_interval(difference))
        reference = float(base.mean())
        relative = mean / reference if reference else None
        rows.append(
            {
                "size": _number(n),
                BASELINE: {"mean": reference, "ci95": list(t_interval(base))},
                SYNTH: {"mean": float(syn.mean()), "ci95": list(t_interval(syn))},
                "gain": {
                    "mean": mean,
                    "ci95": ci95,
                    "above_zero": bool(ci95[0] > 0),
                    "relative": relative,
                    "relative_ci95": [c / reference for c in ci95] if reference else None,
                },
            }
        )
    return rows


def metric_efficiency(
    sizes: Sequence[float], baseline: np.ndarray, synth: np.ndarray, samples: int = BOOTSTRAP_SAMPLES
) -> dict[str, Any]:
    """One metric's data-efficiency entry: the savings factor, the per-size table and the paper's +17%."""
    per_size = gains(sizes, baseline, synth)
    relative = [(row["size"], row["gain"]["relative"]) for row in per_size if row["gain"]["relative"] is not None]
    return savings_factor(sizes, baseline, synth, samples) | {
        "per_size": per_size,
        "paper_relative_gain": {
            "threshold": PAPER_RELATIVE_GAIN,
            "reached_at": [n for n, r in relative if r >= PAPER_RELATIVE_GAIN],
        },
        "largest_gain_at": max(per_size, key=lambda row: row["gain"]["mean"])["size"],
        "largest_relative_gain_at": max(relative, key=lambda item: item[1])[0] if relative else None,
    }


def data_efficiency(
    configurations: Sequence[Mapping[str, Any]], sizes: Sequence[float], samples: int = BOOTSTRAP_SAMPLES
) -> dict[str, Any]:
    """`savings` of a study report: {SUBSET.METRIC: metric_efficiency} for METRICS, on the test split.

    `configurations` are the report's, one per swept size (`sizes[i]` is the i-th's); their seeds are the
    study's, in the same (sorted) order in every configuration, so the j-th value of every summary is seed j.
    """
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    result = {}
    for subset, metric in METRICS:
        tables = {}
        for variant in (BASELINE, SYNTH):
            entries = [configurations[i]["summary"][SPLIT][variant].get(subset, {}).get(metric) for i in order]
            if any(entry is None for entry in entries):
                break
            tables[variant] = np.array([entry["values"] for entry in entries], dtype=float)
        else:
            result[f"{subset}.{metric}"] = metric_efficiency(
                [sizes[i] for i in order], tables[BASELINE], tables[SYNTH], samples
            )
    return result


def _note(point: Crossing, sizes: Sequence[float]) -> str:
    smallest, largest = _number(sizes[0]), _number(sizes[-1])
    if point.status == AT_OR_BELOW_SMALLEST:
        return (
            f"synth is above the {largest}-pair baseline already at the smallest size ({smallest}): matched at or "
            f"below {smallest} human pairs, factor at least {point.factor:.2f}"
        )
    if point.status == NEVER:
        return f"synth does not reach the {largest}-pair baseline at any swept size ({smallest}-{largest})"
    return f"synth reaches the {largest}-pair baseline at {point.matched_at:.0f} human pairs (interpolated on log N)"


def _checked(
    sizes: Sequence[float], baseline: np.ndarray, synth: np.ndarray
) -> tuple[list[float], np.ndarray, np.ndarray]:
    sizes = [float(n) for n in sizes]
    baseline, synth = np.asarray(baseline, dtype=float), np.asarray(synth, dtype=float)
    if len(sizes) < 2 or sorted(set(sizes)) != sizes or sizes[0] <= 0:
        raise ValueError(f"sizes {sizes}: need at least two distinct positive sizes, ascending")
    if baseline.shape != synth.shape or baseline.ndim != 2 or baseline.shape[0] != len(sizes):
        raise ValueError(f"tables {baseline.shape} and {synth.shape}: expected (sizes, seeds) = ({len(sizes)}, n)")
    return sizes, baseline, synth


def _number(n: float) -> int | float:
    return int(n) if float(n).is_integer() else float(n)
