"""Stage `prior`: the text-to-image model, in embedding space.

A diffusers `PriorTransformer` learns p(image embedding | MiniLM caption embedding) from the real human
pairs only, as in the paper, so that no outside image knowledge leaks into the synthetic data. That is
also the coco profile's default, on CLIP image embeddings.

With `prior.kind: pipeline` (coco profile) a pretrained diffusers prior pipeline such as
KandinskyV22PriorPipeline is loaded from `prior.pipeline` instead, checked against the image encoder's
embedding size, and snapshotted to the same output; its fit on the real pairs is measured the same way.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.errors import Synth2Error
from synth2.io import read_parquet, write_curve, write_json
from synth2.models.pretrained_prior import (
    embedding_dim,
    load_prior_pipeline,
    sample_prior_pipeline,
    save_prior_pipeline,
)
from synth2.models.prior import sample_prior, save_prior, train_prior
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype, resolve_source
from synth2.stage import stage_main
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
    if params.prior.kind == "pipeline":
        snapshot_prior_pipeline(params)
    else:
        train_embedding_prior(params)


def snapshot_prior_pipeline(params: Params) -> None:
    p = params.prior
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id", "caption"])
    image_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    device = resolve_device(params.device)
    pipeline = load_prior_pipeline(
        resolve_source(p.pipeline, "prior.pipeline"),
        "prior.pipeline",
        p.pipeline,
        device,
        resolve_dtype(p.dtype, device),
    )
    if embedding_dim(pipeline) != image_emb.shape[1]:
        raise Synth2Error(
            f"prior.pipeline: '{p.pipeline}' makes {embedding_dim(pipeline)}-d image embeddings but "
            f"image_encoder.model makes {image_emb.shape[1]}-d ones; use the vision model the prior was "
            "trained with (its image_encoder)"
        )
    save_prior_pipeline(pipeline, paths.PRIOR)
    write_curve([], paths.PRIOR_LOSS)  # declared plot: a pretrained prior is not trained here

    rows = np.random.default_rng(params.seed).permutation(len(real))[:FIT_CHECK]
    start = time.perf_counter()
    sampled = sample_prior_pipeline(
        pipeline, real["caption"].iloc[rows].tolist(), p.num_inference_steps, p.guidance_scale, seed=params.seed
    )
    metrics = {
        "source": p.pipeline,
        "pipeline": type(pipeline).__name__,
        "embedding_dim": embedding_dim(pipeline),
        "sample_seconds": round(time.perf_counter() - start, 1),
        **fit_metrics(sampled, image_emb[rows], image_emb.mean(0)),
    }
    write_json(metrics, paths.PRIOR_METRICS)
    tracking.log_model(paths.PRIOR, "prior")
    log.info(
        "prior pipeline %s (%s) snapshotted; fit cosine (centred) %.3f",
        p.pipeline,
        type(pipeline).__name__,
        metrics["fit_cosine_centred"],
    )


def train_embedding_prior(params: Params) -> None:
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id", "caption"])
    image_emb = aligned_embeddings(paths.REAL_EMBEDDINGS, real["image_id"].to_numpy())
    text_emb = embed_texts(real["caption"].tolist())

    start = time.perf_counter()
    prior, scheduler, history = train_prior(text_emb, image_emb, params.prior, params.seed)
    seconds = time.perf_counter() - start
    save_prior(prior, scheduler, paths.PRIOR)
    write_curve(history, paths.PRIOR_LOSS)

    # How close are samples to the true embeddings of their captions, against the trivial guess (the mean)?
    rows = np.random.default_rng(params.seed).permutation(len(real))[:FIT_CHECK]
    sampled = sample_prior(prior, scheduler, text_emb[rows], params.prior.num_inference_steps, seed=params.seed)
    metrics = {
        "final_loss": history[-1][1],
        "first_loss": history[0][1],
        "train_seconds": round(seconds, 1),
        **fit_metrics(sampled, image_emb[rows], image_emb.mean(0)),
    }
    write_json(metrics, paths.PRIOR_METRICS)
    tracking.log_model(paths.PRIOR, "prior")
    log.info(
        "prior: loss %.3f -> %.3f in %.0f s; fit cosine (centred) %.3f",
        history[0][1],
        history[-1][1],
        seconds,
        metrics["fit_cosine_centred"],
    )


main = stage_main("prior", run)

if __name__ == "__main__":
    main()
