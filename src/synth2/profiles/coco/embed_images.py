"""embed_images hooks (coco): the snapshotted image backbone embeds the real, validation and test images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import load_output, read_parquet, require_dir
from synth2.profiles import EmbeddedImages

if TYPE_CHECKING:
    import numpy as np

    from synth2.params import Params

EMBEDDED = {paths.REAL_EMBEDDINGS: paths.REAL_TRAIN, paths.VAL_EMBEDDINGS: paths.VAL, paths.TEST_EMBEDDINGS: paths.TEST}


def _thumbnails(files: list[str], size: int = 48) -> np.ndarray:
    import numpy as np

    from synth2.models.vision import open_rgb

    return np.stack([np.asarray(open_rgb(f).resize((size, size))) for f in files])


def embed_images(params: Params) -> EmbeddedImages:
    """In batches on `device`, in `coco.image_encoder.dtype`; a sheet of real images with a caption each."""
    from synth2.models.image_backbone import embed_files, load_saved_backbone
    from synth2.pretrained import resolve_device, resolve_dtype

    p = params.coco.image_encoder
    device = resolve_device(params.device)
    directory = require_dir(paths.IMAGE_ENCODER)
    load = lambda: load_saved_backbone(directory, device, resolve_dtype(p.dtype, device))  # noqa: E731
    backbone = load_output(directory, "image encoder", load)
    embeddings = {}
    for path, table_path in EMBEDDED.items():
        table = read_parquet(table_path, columns=["image_id", "image_path"])
        images = table.drop_duplicates("image_id")  # real_train has one row per caption
        embeddings[path] = (
            images["image_id"].to_numpy(),
            embed_files(backbone, images["image_path"].tolist(), p.batch_size),
        )
    real = read_parquet(paths.REAL_TRAIN, columns=["image_id", "image_path", "caption"])
    sample = real.drop_duplicates("image_id").head(8)
    sheet = (_thumbnails(sample["image_path"].tolist()), sample["caption"].tolist(), 4)
    metrics = {"embed_dim": int(next(iter(embeddings.values()))[1].shape[1])}
    return EmbeddedImages(embeddings, metrics, sheet)
