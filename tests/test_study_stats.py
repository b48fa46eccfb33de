"""The study's statistics on hand-made seeds with known answers (synth2.study.stats): what README's
headline intervals come from. Each test is built so that a plausible wrong implementation fails it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synth2.pipeline import SPLITS, SUBSETS, VARIANT_NAMES
from synth2.study.stats import aggregate, hierarchical_bootstrap


def seed_result(
    cider: dict[str, float], images: int = 6, seed: int = 0, variants: tuple[str, ...] = VARIANT_NAMES
) -> tuple[dict, pd.DataFrame]:
    """One seed's evaluate metrics (every split and subset alike) and per-image CIDEr whose mean is it."""
    rng = np.random.default_rng(seed)
    metrics = {split: {v: {s: {"cider": cider[v]} for s in SUBSETS} for v in variants} for split in SPLITS}
    rows = []
    for split in SPLITS:
        for subset in SUBSETS:
            noise = rng.normal(0, 0.1, images)
            noise -= noise.mean()  # per-image values average exactly to the metric
            for variant in variants:
                rows += [
                    {"split": split, "subset": subset, "variant": variant, "image_id": i, "cider": cider[variant] + n}
                    for i, n in enumerate(noise)
                ]
    return metrics, pd.DataFrame(rows)


def test_differences_are_paired_by_seed_signed_and_relative_to_the_minus_variant():
    # Seeds differ a lot (a hard and an easy world); synth beats baseline by exactly 0.5 in every seed.
    results = {
        7: seed_result({"baseline": 1.0, "synth": 1.5, "synth_unbalanced": 1.2}),
        0: seed_result({"baseline": 4.0, "synth": 4.5, "synth_unbalanced": 4.1}),
        3: seed_result({"baseline": 2.5, "synth": 3.0, "synth_unbalanced": 2.9}),
    }
    out = aggregate(results)
    assert out["seeds"] == [0, 3, 7]
    baseline = out["summary"]["test"]["baseline"]["overall"]["cider"]
    assert baseline["mean"] == pytest.approx(2.5) and baseline["values"] == [4.0, 2.5, 1.0]  # seed order
    gain = out["differences"]["synth - baseline"]["test"]["overall"]["cider"]
    assert gain["values"] == pytest.approx([0.5, 0.5, 0.5])  # paired: no seed-to-seed spread left
    assert gain["mean"] == pytest.approx(0.5) and gain["ci95"] == pytest.approx([0.5, 0.5])
    assert gain["relative_to_minus"] == pytest.approx(0.5 / 2.5)  # mean difference / mean of the minus variant
    balance = out["differences"]["balanced - unbalanced"]["test"]["unseen"]["cider"]
    assert balance["values"] == pytest.approx([0.4, 0.1, 0.3])  # synth - synth_unbalanced, seeds 0, 3, 7
    assert balance["mean"] > 0 and balance["relative_to_minus"] == pytest.approx((0.8 / 3) / (8.2 / 3))
    # Per-image pairing: the bootstrap interval of a constant paired difference is that constant.
    assert gain["bootstrap_ci95"] == pytest.approx([0.5, 0.5])


def flat_bootstrap(per_seed, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The wrong method: all images of all seeds pooled, resampled as one set."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([a - b for a, b in per_seed])
    estimates = [pooled[rng.integers(len(pooled), size=len(pooled))].mean() for _ in range(samples)]
    return tuple(np.quantile(estimates, [0.025, 0.975]))


def paired_seeds(seed_means: list[float], images: int = 300) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    per_seed = []
    for mean in seed_means:
        b = rng.normal(3.0, 1.0, images)
        per_seed.append((b + mean + rng.normal(0, 0.2, images), b))
    return per_seed


def test_the_hierarchical_interval_widens_with_the_spread_between_seeds():
    same = paired_seeds([0.3, 0.3, 0.3, 0.3, 0.3])
    spread = paired_seeds([-0.2, 0.1, 0.3, 0.5, 0.8])  # same mean difference, 0.3
    low_same, high_same = hierarchical_bootstrap(same)
    low, high = hierarchical_bootstrap(spread)
    assert low < 0.3 < high and low_same < 0.3 < high_same
    assert (high - low) > 5 * (high_same - low_same)
    # Pooling the images would hide the seeds' disagreement: its interval is far narrower.
    flat_low, flat_high = flat_bootstrap(spread)
    assert (high - low) > 4 * (flat_high - flat_low)
    # It is the interval of the mean over all seeds, not of one seed's.
    assert abs((low + high) / 2 - 0.3) < abs((low + high) / 2 - (-0.2))


def test_rounds_join_as_variants_and_each_is_compared_with_the_vlm_that_captioned_its_pool():
    """Round rows (synth2.study.rounds) join the experiment's own: `synth_r1 - synth` and
    `synth_r2 - synth_r1` are paired differences with both intervals, like `synth - baseline`."""
    from synth2.study.report import rounds_markdown
    from synth2.study.rounds import round_differences, round_figures, with_rounds

    chain = {"synth_r1": "synth", "synth_r2": "synth_r1"}
    cider = {"baseline": 1.0, "synth": 1.5, "synth_unbalanced": 1.2}
    results, reports_by_seed = {}, []
    for seed, (first, second) in enumerate([(1.7, 1.8), (1.6, 1.9), (1.8, 1.8)]):
        metrics, per_image = seed_result(cider, seed=seed)
        rounds_metrics, rounds_rows = seed_result(
            {"synth_r1": first, "synth_r2": second}, seed=seed, variants=tuple(chain)
        )
        reports = {
            v: {s: rounds_metrics[s][v] for s in SPLITS} | {"pool": {"kept_share": 0.5 + seed / 10}} for v in chain
        }
        results[seed] = with_rounds(metrics, per_image, reports, rounds_rows)
        reports_by_seed.append(reports)
    out = aggregate(results, (*VARIANT_NAMES, *chain), round_differences(chain))
    first = out["differences"]["synth_r1 - synth"]["test"]["overall"]["cider"]
    assert first["values"] == pytest.approx([0.2, 0.1, 0.3]) and "bootstrap_ci95" in first
    second = out["differences"]["synth_r2 - synth_r1"]["test"]["unseen"]["cider"]
    assert second["values"] == pytest.approx([0.1, 0.3, 0.0]) and second["relative_to_minus"] is not None
    assert out["summary"]["val"]["synth_r2"]["seen"]["cider"]["mean"] == pytest.approx((1.8 + 1.9 + 1.8) / 3)
    figures = round_figures(reports_by_seed)
    assert figures["synth_r2"]["pool.kept_share"]["values"] == pytest.approx([0.5, 0.6, 0.7])
    assert "| synth_r2 | synth_r1 | 0.600 ± " in "\n".join(rounds_markdown({"chain": chain, "figures": figures}))
