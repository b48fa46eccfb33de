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
from synth2.errors import Synth2Error
from synth2.io import read_parquet, read_tensors, require_finite, require_rows, write_curve, write_json
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.pipeline import SELECTION_OF, VARIANT_NAMES
from synth2.stage import end_process, run_stage
from synth2.vlm_variant.train import human_pairs, train_vlm_variant

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
    real = human_pairs()
    selection = SELECTION_OF[variant]
    synthetic = synthetic_pairs(selection) if selection else None
    losses = train_vlm_variant(variant, params, real, synthetic)
    write_curve(loss_curve(losses), paths.vlm_loss(variant))
    synthetic_count = 0 if synthetic is None else len(synthetic[1])
    write_json(
        loss_summary(losses) | {"real_pairs": len(real[1]), "synthetic_pairs": synthetic_count},
        paths.vlm_metrics(variant),
    )
    tracking.log_model(paths.vlm_dir(variant), f"vlm_{variant}")


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in VARIANT_NAMES:
        print(f"usage: python -m synth2.stages.train_vlm {{{','.join(VARIANT_NAMES)}}}", file=sys.stderr)
        sys.exit(2)
    variant = sys.argv[1]
    run_stage(f"train_vlm@{variant}", lambda params: train_variant(variant, params), trains=True)


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
