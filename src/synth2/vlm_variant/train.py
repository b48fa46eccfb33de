"""Train one VLM variant on given pairs, with train_vlm's settings and step budget (synth2.vlm_variant)."""

from __future__ import annotations

import logging

import numpy as np

from synth2 import paths
from synth2.embeddings import aligned_embeddings
from synth2.io import read_parquet, require_finite, require_rows
from synth2.models import prefix_captioner
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype
from synth2.profiles import load_hooks

log = logging.getLogger("synth2")
Pairs = tuple[np.ndarray, list[str]]  # image embeddings [N, D] float32, their captions


# ------------------------------------------------------------------------------------------- training


def human_pairs() -> Pairs:
    """The human pairs: their images' embeddings (embed_images) and captions, row for row."""
    real = read_parquet(paths.REAL_TRAIN, columns=["image_id", "caption"])
    require_rows(real, paths.REAL_TRAIN, ["caption"])
    real_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    require_finite(real_emb, str(paths.REAL_EMBEDDINGS))
    return real_emb, real["caption"].tolist()


def train_vlm_variant(variant: str, params: Params, real: Pairs, synthetic: Pairs | None) -> list[float]:
    """Train the prefix captioner on `real` (+ `synthetic`) with train_vlm's settings; save it to
    paths.vlm_dir(variant); return the loss of every step."""
    p = params.train_vlm
    real_emb, real_captions = real
    lm_dir = load_hooks(params, "train_vlm").vlm_lm(params)
    device = resolve_device(params.device)

    # Without synthetic pairs nothing reads train_vlm.synthetic: every batch is real pairs, of one source.
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
        (real_emb, real_captions),
        synthetic,
        config,
        prefix_captioner.training_config(p.steps, p.batch_size, p.lr),
        mix_ratio,
        params.seed,
        device=device,
        autocast_dtype=resolve_dtype(p.mixed_precision, device),
    )
    model.save(paths.vlm_dir(variant))
    log.info("%s: loss %.3f -> %.3f", variant, losses[0], np.mean(losses[-10:]))
    return losses
