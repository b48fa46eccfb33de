"""synthesize hooks (world): held-out pairs, embedding- vs pixel-space timing, decoded samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.profiles import SynthesisReport

if TYPE_CHECKING:
    import pandas as pd

    from synth2.params import Params
    from synth2.profiles import Synthesizer

SELECTION_COLUMNS = ("caption", "concept", "colour", "shape", "size", "position", "colour2", "shape2", "relation")
SHEET_SIZE = 16


def synthesis_report(params: Params, balanced: pd.DataFrame, synthesize: Synthesizer) -> SynthesisReport:
    """How many pairs show held-out combinations; embedding- vs pixel-space time; a contact sheet.

    The pixel-space path is prior -> autoencoder decoder -> pixels -> image encoder: what synthesising
    images would cost on top of synthesising embeddings.
    """
    import time

    import pandas as pd

    from synth2.contact_sheet import contact_sheet
    from synth2.io import load_output, read_parquet, require_dir, write_json
    from synth2.models.autoencoder import decode, encode, load_autoencoder

    seen_combos = set(read_parquet(paths.REAL_TRAIN, columns=["combo"])["combo"])
    directory = require_dir(paths.IMAGE_ENCODER)
    model = load_output(directory, "autoencoder", lambda: load_autoencoder(directory))
    held_out = ~balanced["concept"].isin(seen_combos)

    captions = balanced["caption"].tolist()[: params.synthesize.timing_captions]
    synthesize(captions[:8], params.seed)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    embeddings = synthesize(captions, params.seed)
    embedding_s = time.perf_counter() - start
    # The pixel path synthesises the same embeddings (the same seed: the same bytes), then decodes them to
    # pixels and encodes those back: its time is the embedding time plus the round trip, measured on the
    # embeddings just made rather than by sampling the prior a second time (7% of the stage's sampling).
    start = time.perf_counter()
    encode(model, decode(model, embeddings))
    pixel_s = embedding_s + time.perf_counter() - start

    sample = pd.concat([balanced[held_out].head(SHEET_SIZE // 2), balanced[~held_out].head(SHEET_SIZE)])
    sample = sample.head(SHEET_SIZE)
    images = decode(model, synthesize(sample["caption"].tolist(), params.seed))
    labels = [("" if c in seen_combos else "[held out] ") + t for c, t in zip(sample["concept"], sample["caption"])]
    contact_sheet(images, labels, paths.SYNTHETIC_SHEET)
    write_json(labels, paths.SYNTHETIC_SHEET_CAPTIONS)  # the sheet cuts long captions: here they are whole
    timings = {
        "captions": len(captions),
        "embedding_seconds": embedding_s,
        "pixel_seconds": pixel_s,
        "embedding_captions_per_s": len(captions) / embedding_s,
        "pixel_captions_per_s": len(captions) / pixel_s,
        "pixel_over_embedding_time": pixel_s / embedding_s,
    }
    return SynthesisReport(metrics={"held_out_pairs": int(held_out.sum())}, timings=timings)
