"""Stage `image_encoder`: learn an image embedding from unlabelled images only.

The paper uses a pretrained VQGAN; here a small convolutional autoencoder learns from the unlabelled
pool. Its key metric is how linearly readable each attribute is from the embedding (a probe trained on
pool labels, scored on held-out pool images): a captioner cannot learn what the embedding lacks.
"""

from __future__ import annotations

import logging

import numpy as np

from synth2 import paths
from synth2.contact_sheet import contact_sheet
from synth2.io import read_parquet, read_tensors, require_finite, write_curve, write_json, write_tensors
from synth2.models.autoencoder import decode, encode, linear_probe, save_autoencoder, train_autoencoder
from synth2.params import Params
from synth2.stage import stage_main

log = logging.getLogger("synth2")
PROBED = ("colour", "shape", "size", "position")
SHEET_IMAGES = 8


def run(params: Params) -> None:
    pixels = read_tensors(paths.PIXELS, "prepare")["pixels"]
    pool = read_parquet(paths.POOL, "prepare", columns=["image_id", *PROBED])
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id"])
    test = read_parquet(paths.TEST, "prepare", columns=["image_id"])

    pool_pixels = pixels[pool["image_id"].to_numpy()]
    model, history = train_autoencoder(pool_pixels, params.image_encoder, params.seed)
    save_autoencoder(model, paths.IMAGE_ENCODER)
    write_curve(history, paths.IMAGE_ENCODER_LOSS)

    pool_emb = require_finite(encode(model, pool_pixels), "pool embeddings")
    probe = linear_probe(
        pool_emb, {a: pool[a].to_numpy() for a in PROBED}, holdout=params.image_encoder.probe_holdout, seed=params.seed
    )

    for name, table, path in (("real_train", real, paths.REAL_EMBEDDINGS), ("test", test, paths.TEST_EMBEDDINGS)):
        ids = table["image_id"].to_numpy()
        emb = require_finite(encode(model, pixels[ids]), f"{name} embeddings")
        write_tensors({"embeddings": emb, "image_id": ids}, path)

    test_pixels = pixels[test["image_id"].to_numpy()]
    recon = decode(model, encode(model, test_pixels))
    recon_mse = float(np.mean((recon.astype(np.float32) - test_pixels.astype(np.float32)) ** 2) / 255.0**2)
    sample = test_pixels[:: max(1, len(test_pixels) // SHEET_IMAGES)][:SHEET_IMAGES]
    contact_sheet(
        np.concatenate([sample, decode(model, encode(model, sample))]),
        ["original"] * len(sample) + ["reconstruction"] * len(sample),
        paths.RECONSTRUCTIONS,
        columns=len(sample),
    )
    metrics = {"probe_accuracy": probe, "test_reconstruction_mse": recon_mse, "final_loss": history[-1][1]}
    write_json(metrics, paths.IMAGE_ENCODER_METRICS)
    log.info("probe accuracy %s, test reconstruction MSE %.4f", probe, recon_mse)


main = stage_main("image_encoder", run)

if __name__ == "__main__":
    main()
