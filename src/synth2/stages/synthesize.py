"""Stage `synthesize`: one image embedding per selected caption, from the prior.

Synthesis stays in embedding space, as in the paper. To measure what that saves, the same captions also
go through the pixel-space path (prior → autoencoder decoder → pixels → image encoder) and both
throughputs are written as metrics. A contact sheet of decoded synthetic embeddings, held-out
combinations first, shows what the prior imagines.

In the coco profile the captions carry a class concept instead of world attributes; "held out" means a
concept no human training caption names. The pixel path there is prior -> decoder pipeline
(`synthesize.decoder`, e.g. KandinskyV22Pipeline) -> the image encoder snapshot; without a decoder only
the embedding path is timed. The report lists example captions, plus a sheet of decoded images.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from PIL import Image

from synth2 import paths
from synth2.coco import named_concepts
from synth2.contact_sheet import contact_sheet
from synth2.io import atomic_path, read_parquet, require_dir, require_finite, write_json, write_parquet, write_tensors
from synth2.models.autoencoder import decode, encode, load_autoencoder
from synth2.models.decoder import check_embedding_dim, decode_embeddings, load_decoder
from synth2.models.pretrained_prior import load_prior_pipeline, sample_prior_pipeline
from synth2.models.prior import load_prior, sample_prior
from synth2.models.vision import embed_images, load_saved_vision_model
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype, resolve_source
from synth2.stage import stage_main
from synth2.text_embed import embed_texts

log = logging.getLogger("synth2")
SHEET_SIZE = 16
SHEET_TILE = 32  # decoded images are shrunk to this many pixels a side for the contact sheet
CAPTION_COLUMNS = ["caption", "concept", "colour", "shape", "size", "position", "colour2", "shape2", "relation"]
COCO_CAPTION_COLUMNS = ["caption", "concept"]
N_EXAMPLES = 16


def run(params: Params) -> None:
    p = params.synthesize
    coco = params.profile == "coco"
    columns = COCO_CAPTION_COLUMNS if coco else CAPTION_COLUMNS
    selections = {
        "balanced": (
            read_parquet(paths.BALANCED, "balance", columns=columns),
            paths.SYNTHETIC_BALANCED,
            paths.SYNTHETIC_BALANCED_CAPTIONS,
        ),
        "unbalanced": (
            read_parquet(paths.UNBALANCED, "balance", columns=columns),
            paths.SYNTHETIC_UNBALANCED,
            paths.SYNTHETIC_UNBALANCED_CAPTIONS,
        ),
    }
    synthesize = embedding_synthesizer(params)
    if coco:
        synthesize_all(selections, synthesize, params)
        return
    seen_combos = set(read_parquet(paths.REAL_TRAIN, "prepare", columns=["combo"])["combo"])
    autoencoder = load_autoencoder(require_dir(paths.IMAGE_ENCODER, "image_encoder"))

    metrics = synthesize_selections(selections, synthesize, params.seed)
    balanced = selections["balanced"][0]
    metrics["speed"] = time_paths(
        balanced["caption"].tolist()[: p.timing_captions], synthesize, autoencoder, params.seed
    )
    metrics["balanced"]["held_out_pairs"] = int((~balanced["concept"].isin(seen_combos)).sum())
    write_json(metrics, paths.SYNTHESIZE_METRICS)
    write_sheet(balanced, seen_combos, synthesize, autoencoder, params.seed)
    log.info(
        "embedding path %.0f captions/s, pixel path %.0f captions/s (pixel/embedding time %.2fx)",
        metrics["speed"]["embedding_captions_per_s"],
        metrics["speed"]["pixel_captions_per_s"],
        metrics["speed"]["pixel_over_embedding_time"],
    )


def synthesize_selections(selections: dict, synthesize, seed: int) -> dict:
    """Write each selection's synthetic embeddings and row-aligned captions; return per-selection metrics."""
    metrics: dict = {}
    for name, (table, emb_path, caption_path) in selections.items():
        log.info("synthesising %d %s embeddings", len(table), name)
        embeddings = require_finite(synthesize(table["caption"].tolist(), seed), f"synthetic {name} embeddings")
        write_tensors({"embeddings": embeddings}, emb_path)
        write_parquet(table.reset_index(drop=True), caption_path)
        metrics[name] = {"pairs": len(table), "mean_norm": float(np.linalg.norm(embeddings, axis=1).mean())}
    return metrics


def embedding_synthesizer(params: Params):
    """captions, seed -> image embeddings [N, D] float32, from the prior stage's output."""
    if params.prior.kind == "pipeline":
        return pipeline_synthesizer(params)
    prior, scheduler = load_prior(require_dir(paths.PRIOR, "prior"))

    def synthesize(captions: list[str], seed: int) -> np.ndarray:
        return sample_prior(
            prior,
            scheduler,
            embed_texts(captions),
            params.prior.num_inference_steps,
            params.synthesize.batch_size,
            seed,
        )

    return synthesize


def pipeline_synthesizer(params: Params):
    """The snapshotted pretrained prior pipeline (prior.kind: pipeline) on `device`."""
    device = resolve_device(params.device)
    pipeline = load_prior_pipeline(
        require_dir(paths.PRIOR, "prior"),
        "prior.pipeline",
        str(paths.PRIOR),
        device,
        resolve_dtype(params.prior.dtype, device),
    )

    def synthesize(captions: list[str], seed: int) -> np.ndarray:
        return sample_prior_pipeline(
            pipeline,
            captions,
            params.prior.num_inference_steps,
            params.prior.guidance_scale,
            params.synthesize.batch_size,
            seed,
        )

    return synthesize


def synthesize_all(selections: dict, synthesize, params: Params) -> None:
    """coco profile: embeddings and captions of both selections, path timing, example report (and sheet)."""
    metrics = synthesize_selections(selections, synthesize, params.seed)
    balanced = selections["balanced"][0]
    real_captions = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption"])["caption"]
    named = named_concepts(real_captions, balanced["concept"].dropna().unique())
    metrics["balanced"]["held_out_pairs"] = int((~balanced["concept"].isin(named)).sum())
    timing_captions = balanced["caption"].tolist()[: params.synthesize.timing_captions]
    round_trip = pixel_round_trip(params)
    if round_trip is None:
        metrics["speed"] = time_embedding_path(timing_captions, synthesize, params.seed)
        metrics["speed"]["pixel_path"] = "not configured (set synthesize.decoder)"
    else:
        metrics["speed"] = time_decoder_paths(timing_captions, synthesize, round_trip, params.seed)
        sample = balanced.head(SHEET_SIZE)
        _, images = round_trip(synthesize(sample["caption"].tolist(), params.seed), params.seed)
        thumbs = np.stack([np.asarray(image.convert("RGB").resize((SHEET_TILE, SHEET_TILE))) for image in images])
        contact_sheet(thumbs, sample["caption"].tolist(), paths.SYNTHETIC_SHEET)
    write_json(metrics, paths.SYNTHESIZE_METRICS)
    write_examples(balanced.head(N_EXAMPLES), named)
    log.info(
        "embedding path %.1f captions/s; pixel path %s",
        metrics["speed"]["embedding_captions_per_s"],
        metrics["speed"].get("pixel_captions_per_s", "not configured"),
    )


def pixel_round_trip(params: Params):
    """embeddings, seed -> (re-encoded embeddings, images) through `synthesize.decoder` and the image encoder
    snapshot, or None when no decoder is configured."""
    p = params.synthesize
    if not p.decoder:
        return None
    device = resolve_device(params.device)
    dtype = resolve_dtype(p.dtype, device)
    decoder = load_decoder(resolve_source(p.decoder, "synthesize.decoder"), p.decoder, device, dtype)
    vision, processor = load_saved_vision_model(require_dir(paths.IMAGE_ENCODER, "image_encoder"), device, dtype)
    # The unconditional embedding, as Kandinsky's prior makes it: the encoder's view of a black image.
    negative = embed_images(vision, processor, [Image.new("RGB", (p.decoder_image_size,) * 2)], 1)[0]
    check_embedding_dim(decoder, len(negative), p.decoder)

    def round_trip(embeddings: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
        images = decode_embeddings(
            decoder, embeddings, negative, p.decoder_image_size, p.decoder_steps, p.batch_size, seed
        )
        return embed_images(vision, processor, images, p.batch_size), images

    return round_trip


def time_decoder_paths(captions: list[str], synthesize, round_trip, seed: int) -> dict[str, float]:
    """caption -> embedding, against caption -> embedding -> decoder pixels -> image encoder -> embedding."""
    speed = time_embedding_path(captions, synthesize, seed)
    round_trip(synthesize(captions[:2], seed), seed)  # warm-up
    start = time.perf_counter()
    synthetic = synthesize(captions, seed)
    re_encoded, _ = round_trip(synthetic, seed)
    pixel_s = time.perf_counter() - start
    cosine = (synthetic * re_encoded).sum(1) / (
        np.linalg.norm(synthetic, axis=1) * np.linalg.norm(re_encoded, axis=1) + 1e-8
    )
    return speed | {
        "pixel_seconds": round(pixel_s, 3),
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / speed["embedding_seconds"],
        # How much of the synthetic embedding survives the trip through pixels.
        "round_trip_cosine": float(cosine.mean()),
    }


def time_embedding_path(captions: list[str], synthesize, seed: int) -> dict[str, float]:
    synthesize(captions[:8], seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    synthesize(captions, seed)
    seconds = time.perf_counter() - start
    return {
        "captions": len(captions),
        "embedding_seconds": round(seconds, 3),
        "embedding_captions_per_s": len(captions) / seconds,
    }


def write_examples(sample: pd.DataFrame, named: set[str]) -> None:
    """Markdown list of synthesised captions (no pixels to show without a decoder)."""
    lines = ["| concept | named by human captions | caption |", "|---|---|---|"]
    lines += [f"| {c} | {'yes' if c in named else 'no'} | {t} |" for c, t in zip(sample["concept"], sample["caption"])]
    with atomic_path(paths.SYNTHETIC_EXAMPLES) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def time_paths(captions: list[str], synthesize, autoencoder, seed: int) -> dict[str, float]:
    """Wall time of caption → embedding, against caption → embedding → pixels → embedding."""
    synthesize(captions[:8], seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    synthesize(captions, seed)
    embedding_s = time.perf_counter() - start
    start = time.perf_counter()
    encode(autoencoder, decode(autoencoder, synthesize(captions, seed)))
    pixel_s = time.perf_counter() - start
    return {
        "captions": len(captions),
        "embedding_seconds": round(embedding_s, 3),
        "pixel_seconds": round(pixel_s, 3),
        "embedding_captions_per_s": len(captions) / embedding_s,
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }


def write_sheet(balanced: pd.DataFrame, seen_combos: set[str], synthesize, autoencoder, seed: int) -> None:
    held_out = balanced[~balanced["concept"].isin(seen_combos)]
    seen = balanced[balanced["concept"].isin(seen_combos)]
    sample = pd.concat([held_out.head(SHEET_SIZE // 2), seen.head(SHEET_SIZE)]).head(SHEET_SIZE)
    images = decode(autoencoder, synthesize(sample["caption"].tolist(), seed))
    labels = [("[held out] " if c not in seen_combos else "") + t for c, t in zip(sample["concept"], sample["caption"])]
    contact_sheet(images, labels, paths.SYNTHETIC_SHEET)


main = stage_main("synthesize", run)

if __name__ == "__main__":
    main()
