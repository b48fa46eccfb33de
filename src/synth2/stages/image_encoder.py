"""Stage `image_encoder`: learn an image embedding from unlabelled images only.

The paper uses a pretrained VQGAN; here a small convolutional autoencoder learns from the unlabelled
pool. Its key metric is how linearly readable each attribute is from the embedding (a probe trained on
pool labels, scored on held-out pool images): a captioner cannot learn what the embedding lacks.

In the coco profile the encoder is pretrained: `image_encoder.model` (CLIPVisionModelWithProjection or
any class with its interface, `image_encoder.model_class`) with its image processor embeds the real and
test images in batches on `device`; the embeddings go to the same files, the model to the same folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from synth2 import paths
from synth2.contact_sheet import contact_sheet
from synth2.io import read_parquet, read_tensors, require_finite, write_curve, write_json, write_tensors
from synth2.models.autoencoder import decode, encode, linear_probe, save_autoencoder, train_autoencoder
from synth2.models.vision import embed_files, load_vision_model, save_vision_model, vision_class
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype, resolve_source
from synth2.stage import stage_main

log = logging.getLogger("synth2")
PROBED = ("colour", "shape", "size", "position")
SHEET_IMAGES = 8


def run(params: Params) -> None:
    if params.profile == "coco":
        encode_coco(params)
    else:
        train_world_encoder(params)


def coco_vision_model(params: Params):
    """(model, image processor) of `image_encoder.model` on `device` in `image_encoder.dtype`."""
    p = params.image_encoder
    vision_class(p.model_class, "image_encoder.model_class")  # a typo fails before any download
    device = resolve_device(params.device)
    model_dir = resolve_source(p.model, "image_encoder.model")
    processor_dir = (
        resolve_source(p.image_processor, "image_encoder.image_processor") if p.image_processor else model_dir
    )
    return load_vision_model(
        model_dir, p.model_class, processor_dir, device, resolve_dtype(p.dtype, device), source=p.model
    )


def thumbnails(files: list[Path], size: int = 48) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files])


def encode_coco(params: Params) -> None:
    real = read_parquet(paths.REAL_TRAIN, "prepare", columns=["image_id", "file_name", "caption"])
    test = read_parquet(paths.TEST, "prepare", columns=["image_id", "file_name"])
    image_dir = Path(params.coco.image_dir)
    model, processor = coco_vision_model(params)
    save_vision_model(model, processor, paths.IMAGE_ENCODER)

    start, n_images, norms = time.perf_counter(), 0, []
    for name, table, path in (("real_train", real, paths.REAL_EMBEDDINGS), ("test", test, paths.TEST_EMBEDDINGS)):
        images = table.drop_duplicates("image_id")  # real_train has one row per caption
        emb = embed_files(
            model, processor, [image_dir / f for f in images["file_name"]], params.image_encoder.batch_size
        )
        emb = require_finite(emb, f"{name} embeddings")
        write_tensors({"embeddings": emb, "image_id": images["image_id"].to_numpy()}, path)
        n_images, norms = n_images + len(emb), norms + np.linalg.norm(emb, axis=1).tolist()
    seconds = time.perf_counter() - start

    write_curve([], paths.IMAGE_ENCODER_LOSS)  # declared plot: a pretrained encoder is not trained here
    sample = real.drop_duplicates("image_id").head(SHEET_IMAGES)
    contact_sheet(
        thumbnails([image_dir / f for f in sample["file_name"]]), sample["caption"].tolist(), paths.IMAGE_SAMPLES
    )
    metrics = {
        "model": params.image_encoder.model,
        "embed_dim": int(emb.shape[1]),
        "images": n_images,
        "images_per_s": n_images / seconds,
        "mean_norm": float(np.mean(norms)),
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    write_json(metrics, paths.IMAGE_ENCODER_METRICS)
    log.info(
        "embedded %d images with %s on %s (%.1f images/s), dim %d",
        n_images,
        params.image_encoder.model,
        model.device,
        metrics["images_per_s"],
        emb.shape[1],
    )


def train_world_encoder(params: Params) -> None:
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
