"""Stage `pixel_decoder VARIANT`: the pixel path's diffusion decoder, trained on the unlabelled pool.

The world's pixel path needs what the paper's has: a text-to-image model's decoder, whose cost is a
diffusion model's. This trains synth2.models.pixel_decoder (a small diffusers UNet2DModel, DDPM) to turn
the image encoder's embedding of each pool image back into that image. Like the image encoder it reads
no human pair. It exists only while params.yaml's `pixel_space.variants` lists VARIANT.
"""

from __future__ import annotations

import logging
import sys

from synth2 import paths
from synth2.io import load_output, read_tensors, require_dir, write_curve, write_json
from synth2.models import pixel_decoder
from synth2.models.autoencoder import encode, load_autoencoder
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.stage import end_process, run_stage

log = logging.getLogger("synth2")


def run(variant: str, params: Params) -> None:
    params.pixel_space.require(variant)
    p = params.pixel_space.decoder
    pixels = read_tensors(paths.image_pixels("unlabeled_pool"))["pixels"]
    directory = require_dir(paths.IMAGE_ENCODER)
    encoder = load_output(directory, "autoencoder", lambda: load_autoencoder(directory))
    embeddings = encode(encoder, pixels)
    config = pixel_decoder.PixelDecoderConfig(
        image_size=pixels.shape[1],
        embed_dim=embeddings.shape[1],
        channels=tuple(p.channels),
        layers_per_block=p.layers_per_block,
        num_train_timesteps=p.num_train_timesteps,
    )
    training = pixel_decoder.training_config(p.steps, p.batch_size, p.lr)
    model, losses = pixel_decoder.train_pixel_decoder(pixels, embeddings, config, training, params.seed)
    pixel_decoder.save_pixel_decoder(model, paths.pixel_decoder_dir(variant))
    write_curve(loss_curve(losses), paths.pixel_decoder_loss(variant))
    summary = loss_summary(losses) | {"parameters": pixel_decoder.parameter_count(model), "pool_images": len(pixels)}
    write_json(summary, paths.pixel_decoder_metrics(variant))
    log.info("pixel decoder (%s): %s", variant, summary)


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) == 2 else ""
    run_stage(f"pixel_decoder@{variant}", lambda params: run(variant, params))


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
