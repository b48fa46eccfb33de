"""Stage `pixel_vlm VARIANT`: the VLM trained on the pixel path's synthetic pairs, and its scores.

The pixel path's variant (`synth_pixel`) is `synth` with one difference: its synthetic embeddings went
through decoder -> pixels -> image encoder (pixel_synthesize). It trains with train_vlm's code, settings
and step budget and is scored with evaluate's code (synth2.extra_variant), into its own outputs: evaluate's
outputs stay as they are. Its per-image scores have evaluate's per_image format, so `synth2 study` pairs
them with synth's by image. Exists only while params.yaml's `pixel_space.variants` lists VARIANT.
"""

from __future__ import annotations

import logging
import sys

from synth2 import paths
from synth2.extra_variant import VariantOutputs, read_pairs, score_extra_variant, train_extra_variant
from synth2.io import write_json, write_parquet
from synth2.params import Params
from synth2.stage import run_stage

log = logging.getLogger("synth2")


def run(variant: str, params: Params) -> None:
    params.pixel_space.require(variant)
    directory = paths.pixel_synthetic_dir(variant)
    pairs = read_pairs(
        directory / "embeddings.safetensors", directory / "captions.parquet", f"dvc repro pixel_synthesize@{variant}"
    )
    outputs = VariantOutputs(
        paths.pixel_vlm_dir(variant), paths.pixel_vlm_loss(variant), paths.pixel_vlm_metrics(variant)
    )
    train_extra_variant(variant, pairs, params, outputs)
    scores, per_image = score_extra_variant(variant, outputs.model_dir, params)
    write_json(scores, paths.pixel_vlm_scores(variant))
    write_parquet(per_image, paths.pixel_vlm_per_image(variant))
    log.info("%s test %s", variant, {s: {k: round(v, 3) for k, v in m.items()} for s, m in scores["test"].items()})


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) == 2 else ""
    run_stage(f"pixel_vlm@{variant}", lambda params: run(variant, params), trains=True)


if __name__ == "__main__":
    main()
