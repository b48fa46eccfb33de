"""Stage `train_vlm VARIANT`: the prefix captioner (the VLM), trained on one variant's data.

* baseline: real human pairs only;
* synth: real + balanced synthetic pairs (a `train_vlm.synthetic.mix_ratio` share of every batch);
* synth_unbalanced: real + unbalanced synthetic pairs (the ablation).

One code path, identical settings and step budget: the variants differ only in their data (and, with
`train_vlm.synthetic.source_tags`, in a learned tag that tells real from synthetic pairs). dvc.yaml runs
them as one `foreach` stage (`train_vlm@VARIANT`); the baseline depends on no synthetic data and no
`train_vlm.synthetic` key, so changing them does not re-train it. The LM is the profile's (the caption
LM; in the coco profile optionally another causal LM). Training runs on `device`, with mixed precision
on a GPU.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.errors import Synth2Error
from synth2.io import read_parquet, read_tensors, require_finite, require_rows, write_curve, write_json
from synth2.models import prefix_captioner
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.pipeline import SELECTION_OF, VARIANT_NAMES
from synth2.pretrained import resolve_device, resolve_dtype
from synth2.profiles import load_hooks
from synth2.stage import end_process, run_stage

log = logging.getLogger("synth2")


def synthetic_pairs(selection: str) -> tuple[np.ndarray, list[str]]:
    emb_path, caption_path = paths.synthetic_embeddings(selection), paths.synthetic_captions(selection)
    embeddings = require_finite(read_tensors(emb_path)["embeddings"], str(emb_path))
    table = read_parquet(caption_path, columns=["caption"])
    captions = require_rows(table, caption_path, ["caption"])["caption"].tolist()
    if len(captions) != len(embeddings):
        raise Synth2Error(
            f"{emb_path} has {len(embeddings)} rows but {caption_path} {len(captions)}; re-run 'dvc repro synthesize'"
        )
    return embeddings, captions


def train_variant(variant: str, params: Params) -> None:
    p = params.train_vlm
    real = read_parquet(paths.REAL_TRAIN, columns=["image_id", "caption"])
    require_rows(real, paths.REAL_TRAIN, ["caption"])
    real_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    require_finite(real_emb, str(paths.REAL_EMBEDDINGS))
    selection = SELECTION_OF[variant]
    synthetic = synthetic_pairs(selection) if selection else None
    lm_dir = load_hooks(params, "train_vlm").vlm_lm(params)
    device = resolve_device(params.device)

    # The baseline never reads train_vlm.synthetic: its batches are all real pairs, of one source.
    config = prefix_captioner.PrefixCaptionerConfig(
        embed_dim=real_emb.shape[1],
        prefix_length=p.prefix_length,
        freeze_lm=p.freeze_lm,
        unfreeze_top_layers=p.unfreeze_top_layers,
        max_caption_tokens=p.max_caption_tokens,
        source_tags=p.synthetic.source_tags if synthetic is not None else False,
    )
    mix_ratio = p.synthetic.mix_ratio if synthetic is not None else 0.0
    model, losses = prefix_captioner.train_prefix_captioner(
        lm_dir,
        (real_emb, real["caption"].tolist()),
        synthetic,
        config,
        prefix_captioner.training_config(p.steps, p.batch_size, p.lr),
        mix_ratio,
        params.seed,
        device=device,
        autocast_dtype=resolve_dtype(p.mixed_precision, device),
    )
    model.save(paths.vlm_dir(variant))
    write_curve(loss_curve(losses), paths.vlm_loss(variant))
    synthetic_count = 0 if synthetic is None else len(synthetic[1])
    write_json(
        loss_summary(losses) | {"real_pairs": len(real), "synthetic_pairs": synthetic_count},
        paths.vlm_metrics(variant),
    )
    tracking.log_model(paths.vlm_dir(variant), f"vlm_{variant}")
    log.info("%s: loss %.3f -> %.3f", variant, losses[0], np.mean(losses[-10:]))


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in VARIANT_NAMES:
        print(f"usage: python -m synth2.stages.train_vlm {{{','.join(VARIANT_NAMES)}}}", file=sys.stderr)
        sys.exit(2)
    variant = sys.argv[1]
    run_stage(f"train_vlm@{variant}", lambda params: train_variant(variant, params), trains=True)


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
