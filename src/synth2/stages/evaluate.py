"""Stage `evaluate`: caption every validation and test image with every VLM variant and score the captions.

Greedy captions are scored by the profile, overall, on seen and on unseen concepts: CIDEr and BLEU-4
(pycocoevalcap) against the human references, plus, in the shapes world, exact attribute accuracy
through the world parser. Validation decides, test reports: the variant best on
`tracking.champion_metric` over the *validation* split is this run's champion, and the choice, its metric
and its margin over the runner-up are recorded; it takes the registry alias `champion` from the current
holder only when its margin, paired by validation image, has a 95% bootstrap interval above 0
(synth2.tracking.champion), so the metric must be one scored per image (CIDEr, attribute accuracy).
Per-image scores of both splits go to `reports/evaluate/per_image.parquet`, from which `synth2 study`
bootstraps over images. In the coco
profile "unseen" means an image whose references name a concept no human training caption names.

Captioning is sharded (`compute.shards`, synth2.compute): in this process, or on Ray workers that each
hold one variant's VLM at a time (`compute.engine: ray`); one shard is the unsharded stage.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.compute.pool import shard_pool
from synth2.errors import Synth2Error
from synth2.io import (
    atomic_path,
    write_csv,
    write_json,
    write_parquet,
)
from synth2.params import Params
from synth2.pipeline import BASELINE, SUBSETS, VARIANT_NAMES
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main
from synth2.tracking import lookup
from synth2.vlm_variant.score import caption_with, captioner_work, evaluation_splits, score_split

log = logging.getLogger("synth2")


def relative_gains(scores: dict, variant: str, baseline: str = BASELINE) -> dict:
    gains = {}
    for subset in (s for s in SUBSETS if s in scores[variant]):  # a subset with no image is not scored
        for key, value in scores[variant][subset].items():
            base = scores[baseline][subset][key]
            gains[f"{subset}.{key}"] = (value - base) / base if base else None
    return gains


def choose_champion(scores: dict, key: str) -> dict:
    """The variant best on `key` over validation (`scores["val"]`; test is never read), and by how much
    it beats the runner-up."""
    val_scores = scores["val"]
    try:
        ranked = sorted(((lookup(val_scores[v], key), v) for v in VARIANT_NAMES), reverse=True)
    except KeyError:
        raise Synth2Error(
            f"tracking.champion_metric: '{key}' is not among the validation metrics "
            f"({', '.join(sorted(tracking.flatten(val_scores[BASELINE])))}); pick one of them"
        ) from None
    (best, variant), (runner_up, _) = ranked[0], ranked[1]
    return {"variant": variant, "metric": f"val.{key}", "value": best, "margin": best - runner_up}


def champion_evidence(per_image: pd.DataFrame, key: str) -> dict[str, dict[int, float]]:
    """Each variant's per-image validation scores of `key` (SUBSET.METRIC), {variant: {image id: score}}:
    what the registry bootstraps the new champion's margin over the current one from."""
    subset, _, metric = key.partition(".")
    rows = per_image[(per_image["split"] == "val") & (per_image["subset"] == subset)]
    if metric not in rows or rows[metric].isna().all():
        per_image_metrics = [c for c in ("cider", *sorted(c for c in per_image if c.startswith("attr_"))) if c in rows]
        raise Synth2Error(
            f"tracking.champion_metric: '{key}' has no per-image scores, so the champion's margin cannot be "
            f"bootstrapped over images; pick one of {', '.join(f'{subset}.{m}' for m in per_image_metrics)}"
        )
    return {
        variant: dict(zip(group["image_id"].tolist(), group[metric].astype(float).tolist()))
        for variant, group in rows.groupby("variant", sort=False)
    }


def run(params: Params) -> None:
    profile = load_hooks(params, "evaluate")
    splits = evaluation_splits(profile)
    # A champion metric with nothing to score on validation fails now, not after captioning every image.
    profile.check_champion(params, splits["val"][0])

    with shard_pool(params.compute, captioner_work(params, VARIANT_NAMES), "evaluate") as captioners:
        generated = {
            (variant, split): caption_with(captioners, variant, params, embeddings)
            for variant in VARIANT_NAMES
            for split, (_, embeddings) in splits.items()
        }
    tracking.log_metrics({"compute": captioners.timings})

    metrics: dict = {split: {} for split in splits}
    per_image, captions = [], {}
    for variant in VARIANT_NAMES:
        for split, (table, _) in splits.items():
            predictions = generated[variant, split]
            captions.setdefault(split, table[["image_id", profile.EXAMPLE_KEY, "seen"]].copy())[variant] = predictions
            metrics[split][variant], rows = score_split(profile, variant, split, table, predictions)
            per_image += rows
        log.info(
            "%-16s test %s",
            variant,
            {s: {k: round(v, 3) for k, v in m.items()} for s, m in metrics["test"][variant].items()},
        )
    metrics["gain_over_baseline"] = {
        split: {v: relative_gains(metrics[split], v) for v in VARIANT_NAMES if v != BASELINE} for split in splits
    }
    champion = choose_champion(metrics, params.tracking.champion_metric)
    metrics["champion"] = champion
    per_image_table = pd.concat(per_image, ignore_index=True)
    evidence = champion_evidence(per_image_table, params.tracking.champion_metric)

    test_table = splits["test"][0]
    test_captions = captions["test"].assign(reference=test_table["references"].str[0].to_numpy())
    write_json(metrics, paths.EVAL_METRICS)
    write_csv(plot_table(metrics["test"]), paths.EVAL_PLOT)
    write_parquet(test_captions, paths.EVAL_CAPTIONS)
    write_parquet(per_image_table, paths.EVAL_PER_IMAGE)
    write_examples(test_captions, params.evaluate.n_examples, params.seed, profile.EXAMPLE_KEY)
    log.info(
        "champion on validation: %s (%s = %.4g, margin %.4g over the runner-up); the registry alias "
        "`champion` moves to it only if its margin over the current champion has a 95%% bootstrap interval "
        "over validation images above 0 (the tracking sync decides and says why)",
        *champion.values(),
    )

    flat = {
        v: {f"{split}.{key}": value for split in splits for key, value in tracking.flatten(metrics[split][v]).items()}
        for v in VARIANT_NAMES
    }
    tracking.log_variant_metrics({v: paths.vlm_dir(v) for v in VARIANT_NAMES}, flat)
    tracking.promote_best(
        {v: paths.vlm_dir(v) for v in VARIANT_NAMES},
        evidence,
        f"val.{params.tracking.champion_metric}",
        params.tracking.registered_model,
        paths.VAL,
    )


def plot_table(scores: dict) -> pd.DataFrame:
    rows = [
        {"name": f"{variant} {subset} {key}", "variant": variant, "split": subset, "metric": key, "value": value}
        for variant in VARIANT_NAMES
        for subset, values in scores[variant].items()
        for key, value in values.items()
        if key in ("attr_all", "cider", "bleu4")
    ]
    return pd.DataFrame(rows)


def write_examples(captions: pd.DataFrame, n: int, seed: int, key: str) -> None:
    """A Markdown table of example test captions, half from unseen combinations."""
    rng = np.random.default_rng(seed)
    # Copies: permuting an empty read-only view of the index fails in numpy.
    unseen = captions.index[~captions["seen"]].to_numpy(copy=True)
    seen = captions.index[captions["seen"]].to_numpy(copy=True)
    rows = np.concatenate([rng.permutation(unseen)[: n // 2], rng.permutation(seen)[: n - min(len(unseen), n // 2)]])
    header = f"| {key} | seen | reference | " + " | ".join(VARIANT_NAMES) + " |"
    lines = [header, "|" + "---|" * (3 + len(VARIANT_NAMES))]
    for i in rows:
        row = captions.loc[i]
        cells = [row[key], "yes" if row["seen"] else "no", row["reference"], *(row[v] for v in VARIANT_NAMES)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    with atomic_path(paths.EVAL_EXAMPLES) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


main = stage_main("evaluate", run)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
