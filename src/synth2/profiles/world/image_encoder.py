"""image_encoder hooks (world): a convolutional autoencoder trained on the unlabelled pool only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import read_parquet, read_tensors
from synth2.profiles import ImageEncoder

if TYPE_CHECKING:
    from synth2.params import Params

PROBED = ("colour", "shape", "size", "position")  # attributes the image encoder's linear probes read


def make_image_encoder(params: Params) -> ImageEncoder:
    """Train the autoencoder on the pool; its key metric is how linearly readable each attribute is from
    the embedding (a probe trained on pool labels, scored on held-out pool images): a captioner cannot
    learn what the embedding lacks. Nothing here reads a human pair."""
    from synth2.models import autoencoder

    p = params.world.image_encoder
    pixels = read_tensors(paths.image_pixels("unlabeled_pool"))["pixels"]
    pool = read_parquet(paths.POOL, columns=["image_id", *PROBED])
    config = autoencoder.AutoencoderConfig(image_size=pixels.shape[1], embed_dim=p.embed_dim)
    training = autoencoder.training_config(p.steps, p.batch_size, p.lr)
    model, losses = autoencoder.train_autoencoder(pixels, config, training, params.seed, p.gradient_loss_weight)
    probe = autoencoder.linear_probe(
        autoencoder.encode(model, pixels),
        {a: pool[a].to_numpy() for a in PROBED},
        holdout=p.probe_holdout,
        seed=params.seed,
    )
    return ImageEncoder(
        lambda directory: autoencoder.save_autoencoder(model, directory), {"probe_accuracy": probe}, losses
    )
