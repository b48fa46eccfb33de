"""Stage `prior`: the text-to-image model, in embedding space.

A diffusers `PriorTransformer` learns p(image embedding | MiniLM caption embedding) from the real human
pairs only, as in the paper, so that no outside image knowledge leaks into the synthetic data. That is
the default in both profiles.

When the profile names a pretrained diffusers prior pipeline instead (coco: `coco.prior.kind:
pipeline`, e.g. KandinskyV22PriorPipeline), it is loaded, checked against the image encoder's embedding
size, and snapshotted to the same output; its fit on the real pairs is measured the same way.
"""

from __future__ import annotations

import logging

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.errors import Synth2Error
from synth2.io import read_parquet, require_finite, require_rows, write_curve, write_json
from synth2.models import prior as prior_model
from synth2.models.pretrained_prior import (
    embedding_dim,
    load_prior_pipeline,
    sample_prior_pipeline,
    save_prior_pipeline,
)
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype, resolve_source
from synth2.profiles import PriorPipeline, load_hooks
from synth2.stage import end_process, stage_main
from synth2.text_embed import embed_texts

log = logging.getLogger("synth2")
FIT_CHECK = 256  # real pairs re-sampled after training to measure how well the prior fits them


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def fit_metrics(sampled: np.ndarray, truth: np.ndarray, mean: np.ndarray) -> dict[str, float]:
    """How close samples are to the true embeddings of their captions, against the trivial guess (the mean)."""
    centred_truth = truth - mean
    return {
        "fit_cosine_centred": float(cosine(sampled - mean, centred_truth).mean()),
        "fit_relative_mse": float(((sampled - truth) ** 2).sum() / (centred_truth**2).sum()),
    }


def run(params: Params) -> None:
    real = read_parquet(paths.REAL_TRAIN, columns=["image_id", "caption"])
    require_rows(real, paths.REAL_TRAIN, ["caption"])
    image_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    require_finite(image_emb, str(paths.REAL_EMBEDDINGS))
    rows = np.random.default_rng(params.seed).permutation(len(real))[:FIT_CHECK]
    pipeline = load_hooks(params, "prior").prior_pipeline(params)
    if pipeline is None:
        metrics = train_embedding_prior(params, real, image_emb, rows)
    else:
        metrics = snapshot_prior_pipeline(params, pipeline, real, image_emb, rows)
    write_json(metrics, paths.PRIOR_METRICS)
    tracking.log_model(paths.PRIOR, "prior")
    log.info("prior saved to %s; fit cosine (centred) %.3f", paths.PRIOR, metrics["fit_cosine_centred"])


def train_embedding_prior(params: Params, real, image_emb: np.ndarray, rows: np.ndarray) -> dict:
    p = params.prior
    text_emb = embed_texts(real["caption"].tolist())
    config = prior_model.PriorConfig.from_params(p)
    training = prior_model.training_config(p.steps, p.batch_size, p.lr)
    prior, scheduler, losses = prior_model.train_prior(text_emb, image_emb, config, training, params.seed)
    prior_model.save_prior(prior, scheduler, paths.PRIOR)
    write_curve(loss_curve(losses), paths.PRIOR_LOSS)
    # How close are samples to the true embeddings of their captions, against the trivial guess (the mean)?
    sampled = prior_model.sample_prior(prior, scheduler, text_emb[rows], p.num_inference_steps, seed=params.seed)
    return loss_summary(losses) | fit_metrics(sampled, image_emb[rows], image_emb.mean(0))


def snapshot_prior_pipeline(params: Params, spec: PriorPipeline, real, image_emb: np.ndarray, rows: np.ndarray) -> dict:
    device = resolve_device(params.device)
    dtype = resolve_dtype(spec.dtype, device)
    pipeline = load_prior_pipeline(resolve_source(spec.source, spec.param), spec.param, spec.source, device, dtype)
    if embedding_dim(pipeline) != image_emb.shape[1]:
        raise Synth2Error(
            f"{spec.param}: '{spec.source}' makes {embedding_dim(pipeline)}-d image embeddings but the image "
            f"encoder makes {image_emb.shape[1]}-d ones; use the vision model the prior was trained with "
            "(its image_encoder)"
        )
    save_prior_pipeline(pipeline, paths.PRIOR)
    write_curve([], paths.PRIOR_LOSS)  # declared plot: a pretrained prior is not trained here
    captions = real["caption"].iloc[rows].tolist()
    steps = params.prior.num_inference_steps
    sampled = sample_prior_pipeline(pipeline, captions, steps, spec.guidance_scale, seed=params.seed)
    return {
        "source": spec.source,
        "pipeline": type(pipeline).__name__,
        "embedding_dim": embedding_dim(pipeline),
        **fit_metrics(sampled, image_emb[rows], image_emb.mean(0)),
    }


main = stage_main("prior", run, trains=True)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
