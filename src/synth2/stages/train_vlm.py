"""Stage `train_vlm VARIANT`: the prefix captioner (the VLM), trained on one variant's data.

* baseline: real human pairs only;
* synth: real + balanced synthetic pairs (a `train_vlm.synthetic.mix_ratio` share of every batch);
* synth_unbalanced: real + unbalanced synthetic pairs (the ablation).

One code path, identical settings and step budget: the variants differ only in their data (and, with
`train_vlm.synthetic.source_tags`, in a learned tag that tells real from synthetic pairs). dvc.yaml runs
them as one `foreach` stage (`train_vlm@VARIANT`); the baseline depends on no synthetic data and no
`train_vlm.synthetic` key, so changing them does not re-train it. The LM is the profile's (the caption
LM; in the coco profile optionally another causal LM). Training runs on `device`, with mixed precision
on a GPU. The training itself is synth2.vlm_training's, which a variant outside this stage calls too
(synth2.extra_variant).
"""

from __future__ import annotations

import sys

import numpy as np

from synth2 import paths
from synth2.params import Params
from synth2.pipeline import SELECTION_OF, VARIANT_NAMES
from synth2.stage import run_stage
from synth2.vlm_training import read_pairs, train_vlm_variant


def synthetic_pairs(selection: str) -> tuple[np.ndarray, list[str]]:
    emb_path, caption_path = paths.synthetic_embeddings(selection), paths.synthetic_captions(selection)
    return read_pairs(emb_path, caption_path, "dvc repro synthesize")


def train_variant(variant: str, params: Params) -> None:
    selection = SELECTION_OF[variant]
    train_vlm_variant(variant, synthetic_pairs(selection) if selection else None, params)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in VARIANT_NAMES:
        print(f"usage: python -m synth2.stages.train_vlm {{{','.join(VARIANT_NAMES)}}}", file=sys.stderr)
        sys.exit(2)
    variant = sys.argv[1]
    run_stage(f"train_vlm@{variant}", lambda params: train_variant(variant, params), trains=True)


if __name__ == "__main__":
    main()
