"""Stage `self_improve ROUND`: one self-improvement round, `synth_rN` (params self_improve; none by default).

1. a seeded choice of `pool_size` unlabelled pool images (a different one per round), embedded with
   the image encoder;
2. the previous VLM (`self_improve.rounds[ROUND]`: `synth`, or an earlier round) captions them, greedily;
3. the filter (synth2.pseudo_captions) keeps the captions it trusts without ground truth;
4. accumulate: the kept pairs plus the previous VLM's own pseudo pairs (none for `synth`); replace:
   the kept pairs only. They are stored in the round's VLM directory for the next round;
5. the prior retrains on the human + pseudo pairs and re-synthesises the balanced captions' embeddings;
6. the round's VLM trains as train_vlm@synth does (synth2.vlm_variant), the pseudo pairs tagged real;
7. it is scored on validation and test as evaluate scores (per-image rows in evaluate's format);
8. the round's report: kept share, the pseudo-captions' accuracy against the world's ground truth (read
   after the filter, for the report only), and the caption diversity of the previous and the new VLM on
   the same pool images.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.diversity import distinct_n, entropy_bits
from synth2.errors import Synth2Error
from synth2.io import (
    current_path,
    landing_now,
    load_output,
    read_parquet,
    read_tensors,
    require_dir,
    require_finite,
    require_rows,
    write_curve,
    write_json,
    write_parquet,
    write_tensors,
)
from synth2.models import autoencoder
from synth2.models import prior as prior_model
from synth2.models.training import loss_curve, loss_summary
from synth2.params import ROUND_NAME, Params, round_number
from synth2.pipeline import ROUND_ZERO
from synth2.profiles import load_hooks
from synth2.pseudo_captions import agreement, filter_pseudo_captions, top_rows, training_pseudo_pairs
from synth2.stage import end_process, run_stage
from synth2.text_embed import embed_texts
from synth2.vlm_variant.score import caption_and_score, caption_images, evaluation_splits
from synth2.vlm_variant.train import human_pairs, train_vlm_variant
from synth2.world.accuracy import attribute_hits
from synth2.world.parser import caption_labels

log = logging.getLogger("synth2")
POOL_COLUMNS = ["image_id", "colour", "shape", "size", "position", "combo"]
CALIBRATION_FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # keep fractions whose validation accuracy a round reports
SAMPLE_BATCH = 512  # prior sampling batch; the result does not depend on it (synth2.models.prior)


def pool_sample(params: Params, variant: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The round's pool images (table rows with their labels, and their embeddings), a seeded choice."""
    table = require_rows(read_parquet(paths.POOL, columns=POOL_COLUMNS), paths.POOL)
    count = min(params.self_improve.pool_size, len(table))
    rng = np.random.default_rng([params.seed, round_number(variant)])
    rows = np.sort(rng.choice(len(table), count, replace=False))
    pixels = read_tensors(paths.image_pixels("unlabeled_pool"))["pixels"][rows]
    directory = require_dir(paths.IMAGE_ENCODER)
    model = load_output(directory, "autoencoder", lambda: autoencoder.load_autoencoder(directory))
    embeddings = require_finite(autoencoder.encode(model, pixels), "pool embeddings")
    return table.iloc[rows].reset_index(drop=True), embeddings


def previous_pseudo_pairs(previous: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The pseudo pairs the previous VLM was trained on: none for round 0, whose VLM has only human ones."""
    directory = paths.vlm_dir(previous)
    table_path, emb_path = directory / paths.PSEUDO_PAIRS, directory / paths.PSEUDO_EMBEDDINGS
    if previous == ROUND_ZERO:
        return _no_pairs()
    table = read_parquet(table_path)
    embeddings = read_tensors(emb_path)["embeddings"]
    if len(table) != len(embeddings):
        raise Synth2Error(
            f"{table_path} has {len(table)} rows but {emb_path} {len(embeddings)}; dvc repro -f {previous}"
        )
    return table, embeddings


def _no_pairs() -> tuple[pd.DataFrame, np.ndarray]:
    return pd.DataFrame({"image_id": [], "caption": [], "agreement": [], "round": []}), np.zeros((0, 0), np.float32)


def caption_diversity(captions: list[str]) -> dict[str, float]:
    """distinct-2 of the words, and the entropy (bits) of the colour-shape concepts the captions name."""
    concepts = caption_labels(captions)["concept"].dropna()
    return {"distinct_2": distinct_n(captions, 2), "concept_entropy": entropy_bits(concepts.value_counts().to_numpy())}


def retrained_synthetic_pairs(params: Params, pairs: tuple[np.ndarray, list[str]]) -> tuple[list[float], tuple]:
    """The prior retrained on `pairs`, and its embeddings of the balanced captions: (its losses, pairs)."""
    p = params.prior
    image_emb, captions = pairs
    config = prior_model.PriorConfig.from_params(p)
    training = prior_model.training_config(p.steps, p.batch_size, p.lr)
    prior, scheduler, losses = prior_model.train_prior(embed_texts(captions), image_emb, config, training, params.seed)
    balanced = require_rows(read_parquet(paths.BALANCED, columns=["caption"]), paths.BALANCED, ["caption"])
    balanced_captions = balanced["caption"].tolist()
    text = embed_texts(balanced_captions)
    synthetic = prior_model.sample_prior(prior, scheduler, text, p.num_inference_steps, SAMPLE_BATCH, params.seed)
    return losses, (require_finite(synthetic, "re-synthesised embeddings"), balanced_captions)


def filter_on_validation(params: Params, previous: str, describe, centre: np.ndarray) -> dict[str, float]:
    """What choosing keep_fraction on validation needs: the previous VLM's captions of the validation
    images, ranked by the same agreement, and the colour+shape accuracy of the kept share at each
    candidate fraction (validation labels: the split for choices; the pool's are never read)."""
    table, embeddings = evaluation_splits(load_hooks(params, "evaluate"))["val"]
    captions = caption_images(previous, params, embeddings)
    scores = agreement(describe(captions), embeddings, centre)
    hits = attribute_hits(captions, table)["colour_shape"].to_numpy()
    return {f"top_{round(f * 100)}": float(hits[top_rows(scores, f)].mean()) for f in CALIBRATION_FRACTIONS}


def run_round(variant: str, params: Params) -> None:
    settings = params.self_improve
    if variant not in settings.rounds:
        raise Synth2Error(f"params.yaml: self_improve.rounds has no round '{variant}'; add it, or run another round")
    previous = settings.rounds[variant]
    pool, pool_emb = pool_sample(params, variant)
    log.info("%s: %s captions %d pool images", variant, previous, len(pool))
    pool["caption"] = caption_images(previous, params, pool_emb)

    # The filter, on a table of captions and image ids only: the labels stay behind.
    real_emb, real_captions = human_pairs()
    prior_dir = require_dir(paths.PRIOR)
    prior, scheduler = load_output(prior_dir, "prior", lambda: prior_model.load_prior(prior_dir))

    def describe(captions: list[str]) -> np.ndarray:
        steps = params.prior.num_inference_steps
        return prior_model.sample_prior(prior, scheduler, embed_texts(captions), steps, SAMPLE_BATCH, params.seed)

    centre = real_emb.mean(0)
    kept = filter_pseudo_captions(
        pool[["image_id", "caption"]], pool_emb, describe, centre, settings.filter, settings.keep_fraction
    )
    calibration = filter_on_validation(params, previous, describe, centre)
    kept = kept.assign(round=variant)
    kept_emb = pool_emb[kept.index.to_numpy()]
    earlier = previous_pseudo_pairs(previous) if settings.mode == "accumulate" else None
    pseudo, pseudo_emb = training_pseudo_pairs(settings.mode, earlier or _no_pairs(), (kept, kept_emb))
    log.info(
        "%s: kept %d of %d captions; %d pseudo pairs (%s)", variant, len(kept), len(pool), len(pseudo), settings.mode
    )

    training_pairs = (np.concatenate([real_emb, pseudo_emb]), real_captions + pseudo["caption"].tolist())
    prior_losses, synthetic = retrained_synthetic_pairs(params, training_pairs)
    vlm_losses = train_vlm_variant(variant, params, training_pairs, synthetic)
    # Into the VLM's directory while it still waits in all_or_nothing(): they land with it, or not at all.
    vlm_dir = current_path(paths.vlm_dir(variant))
    with landing_now():
        write_parquet(pseudo, vlm_dir / paths.PSEUDO_PAIRS)
        write_tensors({"embeddings": pseudo_emb.astype(np.float32)}, vlm_dir / paths.PSEUDO_EMBEDDINGS)

    scores, per_image = caption_and_score(variant, params)
    pool["kept"] = pool.index.isin(kept.index)
    pool[f"caption_{variant}"] = caption_images(variant, params, pool_emb)
    metrics = round_report(variant, previous, pool, len(pseudo), scores)
    metrics["train_vlm"] = loss_summary(vlm_losses) | {
        "real_pairs": len(real_captions),
        "pseudo_pairs": len(pseudo),
        "synthetic_pairs": len(synthetic[1]),
    }
    metrics["prior"] = loss_summary(prior_losses)
    metrics["filter_on_validation"] = calibration

    report = paths.self_improve_report(variant)
    write_parquet(per_image, report / "per_image.parquet")
    write_parquet(pool, report / "pool_captions.parquet")
    write_curve(loss_curve(vlm_losses), report / "vlm_loss.csv")
    write_curve(loss_curve(prior_losses), report / "prior_loss.csv")
    write_json(metrics, paths.self_improve_metrics(variant))
    tracking.log_metrics({"self_improve": {k: v for k, v in metrics.items() if k in ("pool", "diversity")}})


def round_report(variant: str, previous: str, pool: pd.DataFrame, pseudo_pairs: int, scores: dict) -> dict:
    """Kept share and accuracy of the pseudo-captions (the world's ground truth, read for this report
    only), diversity of both VLMs' captions of the same pool images (all of them, and the dropped ones,
    which this round did not train on), and the round's scores."""
    hits = attribute_hits(pool["caption"].tolist(), pool)
    kept = pool["kept"].to_numpy()

    def accuracy(rows: np.ndarray) -> dict[str, float | None]:
        return {f"attr_{k}": (float(hits.loc[rows, k].mean()) if rows.any() else None) for k in ("colour_shape", "all")}

    return {
        "previous": previous,
        "pool": {
            "captioned": len(pool),
            "kept": int(kept.sum()),
            "kept_share": float(kept.mean()),
            "pseudo_pairs": pseudo_pairs,
            "accuracy_captioned": accuracy(np.ones(len(pool), bool)),
            "accuracy_kept": accuracy(kept),
            "accuracy_dropped": accuracy(~kept),
        },
        "diversity": {
            "previous": caption_diversity(pool["caption"].tolist()),
            "this": caption_diversity(pool[f"caption_{variant}"].tolist()),
            # The same on the rows the filter dropped: this round's VLM trained on the kept half's captions,
            # so on the whole pool "this" partly measures how well it repeats its training targets.
            "dropped": {
                "previous": caption_diversity(pool.loc[~kept, "caption"].tolist()),
                "this": caption_diversity(pool.loc[~kept, f"caption_{variant}"].tolist()),
            }
            if (~kept).any()
            else None,
        },
        "val": scores["val"],
        "test": scores["test"],
    }


def main() -> None:
    if len(sys.argv) != 2 or not ROUND_NAME.match(sys.argv[1]):
        print(
            "usage: python -m synth2.stages.self_improve synth_rN (a key of params self_improve.rounds)",
            file=sys.stderr,
        )
        sys.exit(2)
    variant = sys.argv[1]
    # One process: the round trains two models in a row, which torchrun's follower ranks do not wait for.
    run_stage(f"self_improve@{variant}", lambda params: run_round(variant, params))


if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
