"""Stage `evaluate`: caption every test image with every VLM variant and score the captions.

CIDEr and BLEU-4 (pycocoevalcap) against the human references, and exact attribute accuracy through the
world parser, each overall, on seen and on unseen colour–shape combinations. The variant that is best
on `tracking.champion_metric` gets the registry alias `champion`.

The coco profile scores CIDEr and BLEU-4 only: attribute accuracy needs the world's ground-truth scenes
and parser, so its keys are omitted (not zero). Its seen/unseen split is whether the concepts a test
image's references name all appear in some human training caption (see synth2.coco).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.caption_metrics import attribute_accuracy, coco_scores
from synth2.embeddings import aligned_embeddings
from synth2.io import atomic_path, read_parquet, require_dir, write_csv, write_json, write_parquet
from synth2.models.prefix_captioner import PrefixCaptioner
from synth2.params import Params
from synth2.pretrained import resolve_device
from synth2.stage import stage_main
from synth2.tracking import lookup

log = logging.getLogger("synth2")
SPLITS = ("overall", "seen", "unseen")
TEST_COLUMNS = ["image_id", "colour", "shape", "size", "position", "combo", "seen", "references"]
COCO_TEST_COLUMNS = ["image_id", "file_name", "seen", "references"]


def score(predictions: list[str], test: pd.DataFrame, with_attributes: bool = True) -> dict[str, float]:
    refs = {i: list(r) for i, r in enumerate(test["references"])}
    coco = coco_scores(dict(enumerate(predictions)), refs)
    if not with_attributes:
        return coco
    attrs = attribute_accuracy(predictions, test)
    return coco | {f"attr_{k}": v for k, v in attrs.items()}


def split_masks(test: pd.DataFrame) -> dict[str, np.ndarray]:
    seen = test["seen"].to_numpy(bool)
    return {"overall": np.ones(len(test), bool), "seen": seen, "unseen": ~seen}


def relative_gains(metrics: dict, variant: str, baseline: str = "baseline") -> dict:
    gains = {}
    for split in (s for s in SPLITS if s in metrics[variant]):  # a split with no test image is not scored
        for key, value in metrics[variant][split].items():
            base = metrics[baseline][split][key]
            gains[f"{split}.{key}"] = (value - base) / base if base else None
    return gains


def run(params: Params) -> None:
    world = params.profile == "world"
    test = read_parquet(paths.TEST, "prepare", columns=TEST_COLUMNS if world else COCO_TEST_COLUMNS)
    embeddings = aligned_embeddings(paths.TEST_EMBEDDINGS, test["image_id"].to_numpy())
    masks = split_masks(test)
    key = "combo" if world else "file_name"  # what names a test image in the examples table
    device = resolve_device(params.device)

    captions = test[["image_id", key, "seen"]].copy()
    captions["reference"] = test["references"].str[0]
    metrics: dict = {}
    for variant in paths.VLM_VARIANTS:
        model = PrefixCaptioner.load(require_dir(paths.vlm_dir(variant), f"train_vlm_{variant}"), device=device)
        predictions = model.generate(embeddings, params.train_vlm.max_caption_tokens, params.evaluate.batch_size)
        captions[variant] = predictions
        metrics[variant] = {
            split: score([p for p, m in zip(predictions, mask) if m], test[mask].reset_index(drop=True), world)
            for split, mask in masks.items()
            if mask.any()
        }
        if world:
            log.info(
                "%-16s unseen attr_all %.3f  seen attr_all %.3f  CIDEr %.3f",
                variant,
                metrics[variant].get("unseen", {}).get("attr_all", float("nan")),
                metrics[variant]["seen"]["attr_all"],
                metrics[variant]["overall"]["cider"],
            )
        else:
            log.info(
                "%-16s CIDEr %.3f  BLEU-4 %.3f",
                variant,
                metrics[variant]["overall"]["cider"],
                metrics[variant]["overall"]["bleu4"],
            )
    metrics["gain_over_baseline"] = {v: relative_gains(metrics, v) for v in paths.VLM_VARIANTS if v != "baseline"}

    write_json(metrics, paths.EVAL_METRICS)
    write_csv(plot_table(metrics), paths.EVAL_PLOT)
    write_parquet(captions, paths.EVAL_CAPTIONS)
    write_examples(captions, params.evaluate.n_examples, params.seed, key)

    champion_key = params.tracking.champion_metric
    tracking.promote_best(
        {v: paths.vlm_dir(v) for v in paths.VLM_VARIANTS},
        {v: lookup(metrics[v], champion_key) for v in paths.VLM_VARIANTS},
    )


def plot_table(metrics: dict) -> pd.DataFrame:
    rows = [
        {"name": f"{variant} {split} {key}", "variant": variant, "split": split, "metric": key, "value": value}
        for variant in paths.VLM_VARIANTS
        for split, values in metrics[variant].items()
        for key, value in values.items()
        if key in ("attr_all", "cider", "bleu4")
    ]
    return pd.DataFrame(rows)


def write_examples(captions: pd.DataFrame, n: int, seed: int, key: str = "combo") -> None:
    """A Markdown table of example captions, half from unseen combinations."""
    rng = np.random.default_rng(seed)
    # Copies: permuting an empty read-only view of the index fails in numpy.
    unseen = captions.index[~captions["seen"]].to_numpy(copy=True)
    seen = captions.index[captions["seen"]].to_numpy(copy=True)
    rows = np.concatenate([rng.permutation(unseen)[: n // 2], rng.permutation(seen)[: n - min(len(unseen), n // 2)]])
    header = f"| {key} | seen | reference | " + " | ".join(paths.VLM_VARIANTS) + " |"
    lines = [header, "|" + "---|" * (3 + len(paths.VLM_VARIANTS))]
    for i in rows:
        row = captions.loc[i]
        cells = [row[key], "yes" if row["seen"] else "no", row["reference"], *(row[v] for v in paths.VLM_VARIANTS)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    with atomic_path(paths.EVAL_EXAMPLES) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


main = stage_main("evaluate", run)

if __name__ == "__main__":
    main()
