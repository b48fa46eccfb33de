"""Training a VLM variant: the prefix captioner on the real human pairs plus one set of synthetic pairs.

train_vlm trains each of its variants with `train_vlm_variant`; synth2.extra_variant trains a variant
outside that stage (the pixel path's) with the same function, so the two differ in their data only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.errors import Synth2Error
from synth2.io import read_parquet, read_tensors, require_finite, require_rows, write_curve, write_json
from synth2.models import prefix_captioner
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype
from synth2.profiles import load_hooks

log = logging.getLogger("synth2")
Pairs = tuple[np.ndarray, list[str]]  # (image embeddings [N, D], their captions)


@dataclass(frozen=True)
class VariantOutputs:
    model_dir: Path
    loss: Path
    metrics: Path


def train_vlm_outputs(variant: str) -> VariantOutputs:
    """Where train_vlm writes a variant."""
    return VariantOutputs(paths.vlm_dir(variant), paths.vlm_loss(variant), paths.vlm_metrics(variant))


def read_pairs(embeddings_path: Path, captions_path: Path, rerun: str) -> Pairs:
    """Synthetic pairs stored as row-aligned embeddings and captions; `rerun` is the command that rewrites them."""
    embeddings = require_finite(read_tensors(embeddings_path)["embeddings"], str(embeddings_path))
    table = read_parquet(captions_path, columns=["caption"])
    captions = require_rows(table, captions_path, ["caption"])["caption"].tolist()
    if len(captions) != len(embeddings):
        raise Synth2Error(
            f"{embeddings_path} has {len(embeddings)} rows but {captions_path} {len(captions)}; re-run '{rerun}'"
        )
    return embeddings, captions


def train_vlm_variant(
    variant: str, synthetic: Pairs | None, params: Params, outputs: VariantOutputs | None = None
) -> None:
    """The prefix captioner on the real human pairs + `synthetic` (None: the real pairs alone), with
    train_vlm's settings and step budget; writes the model, loss curve and summary to `outputs` (default:
    train_vlm's) and logs the model to MLflow."""
    outputs = outputs or train_vlm_outputs(variant)
    p = params.train_vlm
    real = read_parquet(paths.REAL_TRAIN, columns=["image_id", "caption"])
    require_rows(real, paths.REAL_TRAIN, ["caption"])
    real_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    require_finite(real_emb, str(paths.REAL_EMBEDDINGS))
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
    model.save(outputs.model_dir)
    write_curve(loss_curve(losses), outputs.loss)
    synthetic_count = 0 if synthetic is None else len(synthetic[1])
    write_json(
        loss_summary(losses) | {"real_pairs": len(real), "synthetic_pairs": synthetic_count},
        outputs.metrics,
    )
    tracking.log_model(outputs.model_dir, f"vlm_{variant}")
    log.info("%s: loss %.3f -> %.3f", variant, losses[0], np.mean(losses[-10:]))
