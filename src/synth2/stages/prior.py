"""Stage `prior`: the text-to-image model, in embedding space.

A diffusers `PriorTransformer` learns p(image embedding | MiniLM caption embedding) from the real human
pairs only, as in the paper, so that no outside image knowledge leaks into the synthetic data.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from synth2 import paths, tracking
from synth2.embeddings import aligned_embeddings
from synth2.io import read_parquet, write_curve, write_json
from synth2.models.prior import sample_prior, save_prior, train_prior
from synth2.params import Params
from synth2.stage import stage_main
from synth2.text_embed import embed_texts

log = logging.getLogger("synth2")
FIT_CHECK = 256  # real pairs re-sampled after training to measure how well the prior fits them


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def run(params: Params) -> None:
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
    centred_truth = image_emb[rows] - image_emb.mean(0)
    metrics = {
        "final_loss": history[-1][1],
        "first_loss": history[0][1],
        "train_seconds": round(seconds, 1),
        "fit_cosine_centred": float(cosine(sampled - image_emb.mean(0), centred_truth).mean()),
        "fit_relative_mse": float(((sampled - image_emb[rows]) ** 2).sum() / (centred_truth**2).sum()),
    }
    write_json(metrics, paths.PRIOR_METRICS)
    tracking.log_model(paths.PRIOR, "prior")
    log.info("prior: loss %.3f -> %.3f in %.0f s; fit cosine (centred) %.3f", history[0][1], history[-1][1],
             seconds, metrics["fit_cosine_centred"])  # fmt: skip


main = stage_main("prior", run)

if __name__ == "__main__":
    main()
