"""Stage `pixel_synthesize VARIANT`: the pixel path, its data and its cost against the embedding path.

Data: the synthetic embeddings of the selection `pixel_space.variants` maps VARIANT to (synthesize's
output; synth_pixel: the balanced one, so the captions, the prior and its noise are synth's) decoded to
pixels by the pixel decoder and embedded again by the image encoder:
what a VLM would see had synthesis gone through pixels. The metrics say how much survives the trip
(cosine between each embedding and its re-encoding), a sheet shows decoded images.

Timing: on the same captions (the first `synthesize.timing_captions` of that selection),
prior -> embedding against prior -> decoder -> pixels -> image encoder, after a warm-up. Timings differ
from run to run, so they are no DVC output (an output that changes marks everything downstream stale):
they go to the stage's MLflow run (`speed.*`), the log and an untracked JSON (paths.pixel_timings), and
`synth2 study` reads them from MLflow. Exists only while params.yaml's `pixel_space.variants` lists VARIANT.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import numpy as np

from synth2 import paths, tracking
from synth2.contact_sheet import contact_sheet
from synth2.io import (
    load_output,
    read_parquet,
    read_tensors,
    require_dir,
    require_finite,
    write_json,
    write_parquet,
    write_tensors,
)
from synth2.models.autoencoder import encode, load_autoencoder
from synth2.models.pixel_decoder import decode_pixels, load_pixel_decoder
from synth2.models.prior import load_prior, sample_prior
from synth2.params import Params
from synth2.stage import end_process, run_stage
from synth2.text_embed import embed_texts

log = logging.getLogger("synth2")
SHEET_SIZE = 16


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def run(variant: str, params: Params) -> None:
    params.pixel_space.require(variant)
    steps = params.pixel_space.num_inference_steps
    decoder = load_pixel_decoder(require_dir(paths.pixel_decoder_dir(variant)))
    encoder_dir, prior_dir = require_dir(paths.IMAGE_ENCODER), require_dir(paths.PRIOR)
    encoder = load_output(encoder_dir, "autoencoder", lambda: load_autoencoder(encoder_dir))
    prior, scheduler = load_output(prior_dir, "prior", lambda: load_prior(prior_dir))
    selection = params.pixel_space.variants[variant]  # the selection whose embeddings go through pixels
    synthetic_path = paths.synthetic_embeddings(selection)
    synthetic = require_finite(read_tensors(synthetic_path)["embeddings"], str(synthetic_path))
    captions = read_parquet(paths.synthetic_captions(selection))

    embedding_path, pixel_path = synthesis_paths(params, prior, scheduler, decoder, encoder)

    # The data: synth's own embeddings through pixels.
    log.info("decoding %d synthetic embeddings (%d DDIM steps)", len(synthetic), steps)
    re_encoded, images = pixel_path(synthetic)
    require_finite(re_encoded, f"re-encoded {variant} embeddings")
    write_tensors({"embeddings": re_encoded}, paths.pixel_synthetic_dir(variant) / "embeddings.safetensors")
    write_parquet(captions.reset_index(drop=True), paths.pixel_synthetic_dir(variant) / "captions.parquet")
    texts = captions["caption"].tolist()
    contact_sheet(images[:SHEET_SIZE], texts[:SHEET_SIZE], paths.pixel_sheet(variant))
    metrics = {
        "pairs": len(re_encoded),
        "mean_norm": float(np.linalg.norm(re_encoded, axis=1).mean()),
        "round_trip_cosine": float(cosine(synthetic, re_encoded).mean()),
    }
    write_json(metrics, paths.pixel_synthesize_metrics(variant))

    timings = time_paths(texts[: params.synthesize.timing_captions], embedding_path, pixel_path)
    timings |= {"decoder_parameters": sum(p.numel() for p in decoder.parameters()), "decoder_steps": steps}
    tracking.log_metrics({"speed": timings})
    write_json(timings, paths.pixel_timings(variant))  # untracked: see the module's docstring
    log.info("%s: %s; timings %s", variant, metrics, {k: round(v, 3) for k, v in timings.items()})


def synthesis_paths(params: Params, prior, scheduler, decoder, encoder) -> tuple[Callable, Callable]:
    """(captions -> embeddings through the prior, embeddings -> (re-encoded embeddings, pixels) through the
    decoder and the image encoder), with the run's settings and seed."""
    seed, steps, batch = params.seed, params.pixel_space.num_inference_steps, params.pixel_space.batch_size

    def embedding_path(texts: list[str]) -> np.ndarray:
        steps_prior, batch_prior = params.prior.num_inference_steps, params.synthesize.batch_size
        return sample_prior(prior, scheduler, embed_texts(texts), steps_prior, batch_prior, seed, progress=False)

    def pixel_path(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = decode_pixels(decoder, embeddings, steps, batch, seed)
        return encode(encoder, images), images

    return embedding_path, pixel_path


def time_paths(texts: list[str], embedding_path: Callable, pixel_path: Callable) -> dict[str, float]:
    """Seconds of prior -> embedding and of prior -> decoder -> pixels -> encoder on the same `texts`."""
    pixel_path(embedding_path(texts[:8]))  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    embedding_path(texts)
    embedding_s = time.perf_counter() - start
    start = time.perf_counter()
    embeddings = embedding_path(texts)
    decode_start = time.perf_counter()
    pixel_path(embeddings)
    pixel_s = time.perf_counter() - start
    return {
        "captions": len(texts),
        "embedding_seconds": embedding_s,
        "pixel_seconds": pixel_s,
        "decode_and_encode_seconds": time.perf_counter() - decode_start,
        "embedding_captions_per_s": len(texts) / embedding_s,
        "pixel_captions_per_s": len(texts) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) == 2 else ""
    run_stage(f"pixel_synthesize@{variant}", lambda params: run(variant, params))


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
