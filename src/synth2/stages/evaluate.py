"""Stage `evaluate`: caption every test image with every VLM variant and score the captions.

Greedy captions are scored by the profile, overall, on seen and on unseen concepts: CIDEr and BLEU-4
(pycocoevalcap) against the human references, plus, in the shapes world, exact attribute accuracy
through the world parser. The variant that is best on `tracking.champion_metric` gets the registry
alias `champion`. In the coco profile "unseen" means a test image whose references name a concept
no human training caption names (see synth2.coco.dataset).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.io import atomic_path, read_parquet, require_dir, write_csv, write_json, write_parquet
from synth2.models.prefix_captioner import PrefixCaptioner
from synth2.params import Params
from synth2.pretrained import resolve_device
from synth2.profiles import load_profile
from synth2.stage import stage_main
from synth2.tracking import lookup

log = logging.getLogger("synth2")
SPLITS = ("overall", "seen", "unseen")


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
    profile = load_profile(params)
    test = read_parquet(paths.TEST, "prepare", columns=list(profile.TEST_COLUMNS))
    embeddings = aligned_embeddings(paths.TEST_EMBEDDINGS, test["image_id"].to_numpy())
    masks = split_masks(test)
    key = profile.EXAMPLE_KEY
    device = resolve_device(params.device)

    captions = test[["image_id", key, "seen"]].copy()
    captions["reference"] = test["references"].str[0]
    metrics: dict = {}
    for variant in paths.VLM_VARIANTS:
        model = PrefixCaptioner.load(require_dir(paths.vlm_dir(variant), f"train_vlm@{variant}"), device=device)
        predictions = model.generate(embeddings, params.train_vlm.max_caption_tokens, params.evaluate.batch_size)
        captions[variant] = predictions
        metrics[variant] = {
            split: profile.score([p for p, m in zip(predictions, mask) if m], test[mask].reset_index(drop=True))
            for split, mask in masks.items()
            if mask.any()
        }
        log.info("%-16s %s", variant, {s: {k: round(v, 3) for k, v in m.items()} for s, m in metrics[variant].items()})
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


def write_examples(captions: pd.DataFrame, n: int, seed: int, key: str) -> None:
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
