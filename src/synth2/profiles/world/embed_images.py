"""embed_images hooks (world): the trained autoencoder embeds the human pairs', validation and test images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from synth2 import paths
from synth2.io import load_output, read_parquet, read_tensors, require_dir
from synth2.profiles import EmbeddedImages

if TYPE_CHECKING:
    from synth2.params import Params

EMBEDDED = {"real_train": paths.REAL_EMBEDDINGS, "val": paths.VAL_EMBEDDINGS, "test": paths.TEST_EMBEDDINGS}
SHEET_IMAGES = 8


def embed_images(params: Params) -> EmbeddedImages:
    """Embeddings keyed by image id; how well the test images come back through the decoder; a sheet of
    test images over their reconstructions."""
    from synth2.models import autoencoder

    directory = require_dir(paths.IMAGE_ENCODER)
    model = load_output(directory, "autoencoder", lambda: autoencoder.load_autoencoder(directory))
    embeddings, pixels = {}, {}
    for name, path in EMBEDDED.items():
        ids = read_parquet(paths.image_table(name), columns=["image_id"])["image_id"].to_numpy()
        pixels[name] = read_tensors(paths.image_pixels(name))["pixels"]
        embeddings[path] = (ids, autoencoder.encode(model, pixels[name]))

    test_pixels = pixels["test"]
    recon = autoencoder.decode(model, embeddings[paths.TEST_EMBEDDINGS][1])
    recon_mse = float(np.mean((recon.astype(np.float32) - test_pixels.astype(np.float32)) ** 2) / 255.0**2)
    sample = test_pixels[:: max(1, len(test_pixels) // SHEET_IMAGES)][:SHEET_IMAGES]
    sheet = (
        np.concatenate([sample, autoencoder.decode(model, autoencoder.encode(model, sample))]),
        ["original"] * len(sample) + ["reconstruction"] * len(sample),
        len(sample),
    )
    return EmbeddedImages(embeddings, {"test_reconstruction_mse": recon_mse}, sheet)
