"""synthesize hooks (coco): embedding-space timing, and with a decoder the pixel-space path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.profiles import SynthesisReport

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from synth2.params import Params
    from synth2.profiles import Synthesizer

SELECTION_COLUMNS = ("caption", "concept")
SHEET_SIZE = 16
SHEET_TILE = 32  # decoded images are shrunk to this many pixels a side for the contact sheet
N_EXAMPLES = 16


def synthesis_report(params: Params, balanced: pd.DataFrame, synthesize: Synthesizer) -> SynthesisReport:
    """Pairs of classes no human caption names; embedding-space time, and with a decoder the pixel-space
    path with a sheet of decoded images (else an examples table)."""
    import time

    import numpy as np

    from synth2.coco.concepts import named_concepts
    from synth2.contact_sheet import contact_sheet
    from synth2.io import atomic_path, read_parquet, write_json

    seed = params.seed
    real_captions = read_parquet(paths.REAL_TRAIN, columns=["caption"])["caption"]
    named = named_concepts(real_captions, balanced["concept"].dropna().unique())
    captions = balanced["caption"].tolist()[: params.synthesize.timing_captions]
    synthesize(captions[:8], seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    synthetic = synthesize(captions, seed)
    embedding_s = time.perf_counter() - start
    timings = {
        "captions": len(captions),
        "embedding_seconds": embedding_s,
        "embedding_captions_per_s": len(captions) / embedding_s,
    }
    metrics = {"held_out_pairs": int((~balanced["concept"].isin(named)).sum())}

    lines = ["| concept | named by human captions | caption |", "|---|---|---|"]
    sample = balanced.head(N_EXAMPLES)
    lines += [f"| {c} | {'yes' if c in named else 'no'} | {t} |" for c, t in zip(sample["concept"], sample["caption"])]
    with atomic_path(paths.SYNTHETIC_EXAMPLES) as tmp:
        tmp.write_text("\n".join(lines) + "\n")

    round_trip = _pixel_round_trip(params)
    if round_trip is None:
        return SynthesisReport(
            metrics=metrics | {"pixel_path": "not configured (coco.synthesize.decoder)"}, timings=timings
        )

    round_trip(synthesize(captions[:2], seed), seed)  # warm-up
    start = time.perf_counter()
    re_encoded, _ = round_trip(synthesize(captions, seed), seed)
    pixel_s = time.perf_counter() - start
    cosine = (synthetic * re_encoded).sum(1) / (
        np.linalg.norm(synthetic, axis=1) * np.linalg.norm(re_encoded, axis=1) + 1e-8
    )
    # How much of the synthetic embedding survives the trip through pixels.
    metrics["round_trip_cosine"] = float(cosine.mean())
    timings |= {
        "pixel_seconds": pixel_s,
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }
    sample = balanced.head(SHEET_SIZE)
    _, images = round_trip(synthesize(sample["caption"].tolist(), seed), seed)
    thumbs = np.stack([np.asarray(image.convert("RGB").resize((SHEET_TILE, SHEET_TILE))) for image in images])
    contact_sheet(thumbs, sample["caption"].tolist(), paths.SYNTHETIC_SHEET)
    write_json(sample["caption"].tolist(), paths.SYNTHETIC_SHEET_CAPTIONS)
    return SynthesisReport(metrics=metrics, timings=timings)


def _pixel_round_trip(params: Params):
    """embeddings, seed -> (re-encoded embeddings, images) through `coco.synthesize.decoder` and the image
    encoder snapshot, or None when no decoder is configured."""
    from PIL import Image

    from synth2.io import require_dir
    from synth2.models.decoder import check_embedding_dim, decode_embeddings, load_decoder
    from synth2.models.image_backbone import embed_images, load_saved_backbone
    from synth2.pretrained import resolve_device, resolve_dtype, resolve_source

    p, batch_size = params.coco.synthesize, params.synthesize.batch_size
    if not p.decoder:
        return None
    device = resolve_device(params.device)
    dtype = resolve_dtype(p.dtype, device)
    decoder = load_decoder(resolve_source(p.decoder, "coco.synthesize.decoder"), p.decoder, device, dtype)
    backbone = load_saved_backbone(require_dir(paths.IMAGE_ENCODER), device, dtype)
    # The unconditional embedding, as Kandinsky's prior makes it: the encoder's view of a black image.
    negative = embed_images(backbone, [Image.new("RGB", (p.decoder_image_size,) * 2)], 1)[0]
    check_embedding_dim(decoder, len(negative), p.decoder)

    def round_trip(embeddings: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
        size, steps = p.decoder_image_size, p.decoder_steps
        images = decode_embeddings(decoder, embeddings, negative, size, steps, batch_size, seed)
        return embed_images(backbone, images, batch_size), images

    return round_trip
