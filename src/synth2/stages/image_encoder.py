"""Stage `image_encoder`: the image embedding every later stage works in (the paper's VQGAN).

The profile makes it: the shapes world trains a small convolutional autoencoder on the unlabelled pool
only (and reports how linearly readable each attribute is from its embedding); the coco profile embeds
the images with a pretrained CLIP-style vision model. Either way the stage writes the model, the real
and test embeddings (keyed by image id), metrics and a contact sheet.
"""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.contact_sheet import contact_sheet
from synth2.io import require_finite, write_curve, write_json, write_tensors
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.profiles import load_profile
from synth2.stage import stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    encoded = load_profile(params).encode_images(params)
    for path, (_, embeddings) in encoded.embeddings.items():
        require_finite(embeddings, f"{path.stem} embeddings")
    encoded.save(paths.IMAGE_ENCODER)
    for path, (ids, embeddings) in encoded.embeddings.items():
        write_tensors({"embeddings": embeddings, "image_id": ids}, path)
    # The declared plot is empty when nothing was trained here (a pretrained encoder).
    write_curve(loss_curve(encoded.losses), paths.IMAGE_ENCODER_LOSS)
    images, captions, columns = encoded.sheet
    contact_sheet(images, captions, paths.IMAGE_ENCODER_SHEET, columns=columns)
    metrics = encoded.metrics | (loss_summary(encoded.losses) if encoded.losses else {})
    metrics["images"] = {path.stem: len(ids) for path, (ids, _) in encoded.embeddings.items()}
    write_json(metrics, paths.IMAGE_ENCODER_METRICS)
    log.info("image encoder saved to %s; %s", paths.IMAGE_ENCODER, encoded.metrics)


main = stage_main("image_encoder", run, trains=True)

if __name__ == "__main__":
    main()
