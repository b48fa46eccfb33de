"""Train a VLM variant on given real + synthetic pairs, and score it, with the pipeline's own code.

A variant that lives outside train_vlm and evaluate (the pixel path's `synth_pixel`) is trained by
train_vlm's function (synth2.vlm_training) and scored by evaluate's (synth2.vlm_scoring), so it differs
from their variants in its data only; its outputs go where the caller says (`VariantOutputs`), so the
two stages' outputs stay as they are. The two halves live in separate modules so that an edit of the
scoring never re-trains train_vlm's variants (dvc.yaml's code deps follow imports).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from synth2.io import current_path, require_dir
from synth2.models.prefix_captioner import PrefixCaptioner
from synth2.params import Params
from synth2.pretrained import resolve_device
from synth2.profiles import load_hooks
from synth2.vlm_scoring import read_evaluation_splits, score_predictions
from synth2.vlm_training import Pairs, VariantOutputs, read_pairs, train_vlm_variant

__all__ = ["VariantOutputs", "read_pairs", "score_extra_variant", "train_extra_variant"]


def train_extra_variant(variant: str, synthetic: Pairs | None, params: Params, outputs: VariantOutputs) -> None:
    """The prefix captioner on the real human pairs + `synthetic`, exactly as train_vlm trains its
    variants (settings, step budget, seed), written to `outputs` and logged to MLflow as `vlm_VARIANT`."""
    train_vlm_variant(variant, synthetic, params, outputs)


def score_extra_variant(variant: str, model_dir: Path, params: Params) -> tuple[dict, pd.DataFrame]:
    """Greedy captions of every validation and test image by the VLM in `model_dir`, scored as evaluate
    scores its variants: ({split: {subset: scores}}, per-image scores with variant = `variant`)."""
    profile = load_hooks(params, "evaluate")
    # current_path: a model this stage has just saved is still pending (synth2.io.all_or_nothing).
    model = PrefixCaptioner.load(require_dir(current_path(model_dir)), resolve_device(params.device))
    metrics, per_image = {}, []
    for split, (table, embeddings) in read_evaluation_splits(profile).items():
        predictions = model.generate(embeddings, params.train_vlm.max_caption_tokens, params.evaluate.batch_size)
        metrics[split], frames = score_predictions(profile, variant, split, table, predictions)
        per_image += frames
    return metrics, pd.concat(per_image, ignore_index=True)
