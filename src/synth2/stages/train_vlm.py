"""Stage `train_vlm VARIANT`: the prefix captioner, trained on one variant's data.

* baseline: real human pairs only;
* synth: real + balanced synthetic pairs (a `mix_ratio` share of every batch);
* synth_unbalanced: real + unbalanced synthetic pairs (the ablation).

One code path, identical settings and step budget: the variants differ only in their data.

The LM is the caption LM's output by default; in the coco profile `train_vlm.lm_path` can name any other
causal LM (local directory or hub id). Training runs on `device`, with mixed precision on a GPU.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.errors import Synth2Error
from synth2.io import read_parquet, read_tensors, require_dir, write_curve, write_json
from synth2.models.prefix_captioner import train_prefix_captioner
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype, resolve_source
from synth2.stage import run_stage
from synth2.stages.caption_lm import smoothed_curve

log = logging.getLogger("synth2")
SYNTHETIC_SOURCES = {
    "synth": (paths.SYNTHETIC_BALANCED, paths.SYNTHETIC_BALANCED_CAPTIONS),
    "synth_unbalanced": (paths.SYNTHETIC_UNBALANCED, paths.SYNTHETIC_UNBALANCED_CAPTIONS),
}


def synthetic_pairs(variant: str) -> tuple[np.ndarray, list[str]] | None:
    if variant not in SYNTHETIC_SOURCES:
        return None
    emb_path, caption_path = SYNTHETIC_SOURCES[variant]
    embeddings = read_tensors(emb_path, "synthesize")["embeddings"]
    captions = read_parquet(caption_path, "synthesize", columns=["caption"])["caption"].tolist()
    if len(captions) != len(embeddings):
        raise Synth2Error(
            f"{emb_path} has {len(embeddings)} rows but {caption_path} {len(captions)}; re-run 'dvc repro synthesize'"
        )
    return embeddings, captions


def vlm_lm_dir(params: Params):
    """The VLM's LM: `train_vlm.lm_path` in the coco profile when set, else the caption LM's output."""
    if params.profile == "coco" and params.train_vlm.lm_path:
        return resolve_source(params.train_vlm.lm_path, "train_vlm.lm_path")
    return require_dir(paths.CAPTION_LM, "caption_lm")


def train_variant(variant: str, params: Params) -> None:
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id", "caption"])
    real_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    synthetic = synthetic_pairs(variant)
    lm_dir = vlm_lm_dir(params)
    device = resolve_device(params.device)
    autocast_dtype = resolve_dtype(params.train_vlm.mixed_precision, device)

    start = time.perf_counter()
    model, losses = train_prefix_captioner(
        lm_dir,
        (real_emb, real["caption"].tolist()),
        synthetic,
        params.train_vlm,
        params.seed,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    seconds = time.perf_counter() - start
    model.save(paths.vlm_dir(variant))
    write_curve(smoothed_curve(losses), paths.vlm_loss(variant))
    write_json(
        {
            "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "real_pairs": len(real),
            "synthetic_pairs": 0 if synthetic is None else len(synthetic[1]),
            "train_seconds": round(seconds, 1),
        },
        paths.vlm_metrics(variant),
    )
    tracking.log_model(paths.vlm_dir(variant), f"vlm_{variant}")
    log.info("%s: loss %.3f -> %.3f in %.0f s", variant, losses[0], np.mean(losses[-10:]), seconds)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in paths.VLM_VARIANTS:
        print(f"usage: python -m synth2.stages.train_vlm {{{','.join(paths.VLM_VARIANTS)}}}", file=sys.stderr)
        sys.exit(2)
    variant = sys.argv[1]
    run_stage(f"train_vlm_{variant}", lambda params: train_variant(variant, params))


if __name__ == "__main__":
    main()
