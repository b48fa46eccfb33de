"""Stage `pixel_vlm VARIANT`: the VLM trained on the pixel path's synthetic pairs, and its scores.

The pixel path's variant (`synth_pixel`) is `synth` with one difference: its synthetic embeddings went
through decoder -> pixels -> image encoder (pixel_synthesize). It trains with train_vlm's code, settings
and step budget and is scored with evaluate's code (synth2.vlm_variant), into its own outputs: evaluate's
outputs stay as they are. Its per-image scores have evaluate's per_image format, so `synth2 study` pairs
them with synth's by image. Exists only while params.yaml's `pixel_space.variants` lists VARIANT.
"""

from __future__ import annotations

import logging
import sys

from synth2 import paths, tracking
from synth2.errors import Synth2Error
from synth2.io import read_parquet, read_tensors, require_finite, require_rows, write_curve, write_json, write_parquet
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.stage import end_process, run_stage
from synth2.vlm_variant.score import caption_and_score
from synth2.vlm_variant.train import Pairs, human_pairs, train_vlm_variant

log = logging.getLogger("synth2")


def pixel_pairs(variant: str) -> Pairs:
    directory = paths.pixel_synthetic_dir(variant)
    embeddings_path, captions_path = directory / "embeddings.safetensors", directory / "captions.parquet"
    embeddings = require_finite(read_tensors(embeddings_path)["embeddings"], str(embeddings_path))
    captions = require_rows(read_parquet(captions_path, columns=["caption"]), captions_path, ["caption"])
    if len(captions) != len(embeddings):
        raise Synth2Error(
            f"{embeddings_path} has {len(embeddings)} rows but {captions_path} {len(captions)}; "
            f"re-run 'dvc repro pixel_synthesize@{variant}'"
        )
    return embeddings, captions["caption"].tolist()


def run(variant: str, params: Params) -> None:
    params.pixel_space.require(variant)
    real, synthetic = human_pairs(), pixel_pairs(variant)
    losses = train_vlm_variant(variant, params, real, synthetic)
    write_curve(loss_curve(losses), paths.pixel_vlm_loss(variant))
    summary = loss_summary(losses) | {"real_pairs": len(real[1]), "synthetic_pairs": len(synthetic[1])}
    write_json(summary, paths.pixel_vlm_metrics(variant))
    tracking.log_model(paths.vlm_dir(variant), f"vlm_{variant}")
    scores, per_image = caption_and_score(variant, params)
    write_json(scores, paths.pixel_vlm_scores(variant))
    write_parquet(per_image, paths.pixel_vlm_per_image(variant))
    log.info("%s test %s", variant, {s: {k: round(v, 3) for k, v in m.items()} for s, m in scores["test"].items()})


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) == 2 else ""
    run_stage(f"pixel_vlm@{variant}", lambda params: run(variant, params), trains=True)


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
