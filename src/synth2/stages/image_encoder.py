"""Stage `image_encoder`: the image embedding every later stage works in (the paper's VQGAN).

The profile makes it: the shapes world trains a small convolutional autoencoder on the unlabelled pool
only (and reports how linearly readable each attribute is from its embedding); the coco profile
snapshots a pretrained CLIP-style vision model. The stage reads no human pair, so a change of the human
pairs never re-trains it; `embed_images` embeds them with its model.
"""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.io import write_curve, write_json
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    encoder = load_hooks(params, "image_encoder").make_image_encoder(params)
    encoder.save(paths.IMAGE_ENCODER)
    # The declared plot is empty when nothing was trained here (a pretrained encoder).
    write_curve(loss_curve(encoder.losses), paths.IMAGE_ENCODER_LOSS)
    write_json(encoder.metrics | (loss_summary(encoder.losses) if encoder.losses else {}), paths.IMAGE_ENCODER_METRICS)
    log.info("image encoder saved to %s; %s", paths.IMAGE_ENCODER, encoder.metrics)


main = stage_main("image_encoder", run, trains=True)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
