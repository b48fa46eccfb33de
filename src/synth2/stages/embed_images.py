"""Stage `embed_images`: the human pairs', validation and test images in the image encoder's embedding.

One file per image set (`image_id` and `embeddings`), so the prior and the VLMs depend on the human
pairs' embeddings and evaluate on the validation and test ones only. The profile embeds (world: the
trained autoencoder, plus how well test images come back through its decoder; coco: the snapshotted
vision model) and makes a contact sheet.
"""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.contact_sheet import contact_sheet
from synth2.io import require_finite, write_json, write_tensors
from synth2.params import Params
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    embedded = load_hooks(params, "embed_images").embed_images(params)
    for path, (ids, embeddings) in embedded.embeddings.items():
        require_finite(embeddings, f"{path.stem} embeddings")
        write_tensors({"embeddings": embeddings, "image_id": ids}, path)
    images, captions, columns = embedded.sheet
    contact_sheet(images, captions, paths.IMAGE_ENCODER_SHEET, columns=columns)
    counts = {path.stem: len(ids) for path, (ids, _) in embedded.embeddings.items()}
    write_json(embedded.metrics | {"images": counts}, paths.EMBED_METRICS)
    log.info("embedded %s; %s", counts, embedded.metrics)


main = stage_main("embed_images", run)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
