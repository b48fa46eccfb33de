"""Caption images with one VLM variant, and score its captions of validation and test as evaluate does
(synth2.vlm_variant)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from synth2 import paths
from synth2.compute.pool import ShardWork, shard_pool
from synth2.embeddings import aligned_embeddings
from synth2.io import current_path, load_output, read_parquet, require_dir, require_rows
from synth2.models.prefix_captioner import PrefixCaptioner
from synth2.params import Params
from synth2.pretrained import resolve_device
from synth2.profiles import load_hooks

EVALUATION_SPLITS = {"val": (paths.VAL, paths.VAL_EMBEDDINGS), "test": (paths.TEST, paths.TEST_EMBEDDINGS)}


# ------------------------------------------------------------------------------------------ captioning


class VariantCaptioner:
    """One variant's VLM at a time, loaded when first asked for: a worker holds one model in memory, and
    evaluation goes variant by variant, so each worker loads each variant at most once."""

    def __init__(self, device: str) -> None:
        self.device = resolve_device(device)
        self.variant: str | None = None
        self.model: PrefixCaptioner | None = None

    def generate(self, variant: str, embeddings: np.ndarray, max_new_tokens: int, batch_size: int) -> list[str]:
        if variant != self.variant:
            self.model = None  # free the previous variant first
            # A VLM trained earlier in this stage is still waiting in all_or_nothing(): read it there.
            directory = require_dir(current_path(paths.vlm_dir(variant)))
            load = partial(PrefixCaptioner.load, directory, self.device)
            self.model, self.variant = load_output(directory, "VLM", load), variant
        return self.model.generate(embeddings, max_new_tokens, batch_size)


def caption_shard(
    variant: str, max_new_tokens: int, batch_size: int, captioner: VariantCaptioner, embeddings: np.ndarray
) -> list[str]:
    return captioner.generate(variant, embeddings, max_new_tokens, batch_size)


def captioner_work(params: Params, variants: tuple[str, ...]) -> ShardWork:
    return ShardWork(partial(VariantCaptioner, params.device), tuple(current_path(paths.vlm_dir(v)) for v in variants))


def caption_with(captioners, variant: str, params: Params, embeddings: np.ndarray) -> list[str]:
    """Greedy captions of `embeddings` by `variant`'s VLM, on a shard pool of `captioner_work`."""
    generate = partial(caption_shard, variant, params.train_vlm.max_caption_tokens, params.evaluate.batch_size)
    return captioners.map(generate, embeddings)


def caption_images(variant: str, params: Params, embeddings: np.ndarray) -> list[str]:
    """Greedy captions of any image embeddings (e.g. the unlabelled pool's) by `variant`'s VLM."""
    with shard_pool(params.compute, captioner_work(params, (variant,)), variant) as captioners:
        return caption_with(captioners, variant, params, embeddings)


# ------------------------------------------------------------------------------------------- scoring


def evaluation_splits(profile) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """{split: (its table with the profile's columns, its image embeddings row for row)}, val and test."""
    splits = {}
    for split, (table_path, embeddings_path) in EVALUATION_SPLITS.items():
        table = read_parquet(table_path, columns=list(profile.TEST_COLUMNS))
        require_rows(table, table_path, ["references"])
        splits[split] = (table, aligned_embeddings(embeddings_path, table["image_id"].to_numpy()))
    return splits


def subset_masks(table: pd.DataFrame) -> dict[str, np.ndarray]:
    seen = table["seen"].to_numpy(bool)
    return {"overall": np.ones(len(table), bool), "seen": seen, "unseen": ~seen}


def score_split(profile, variant: str, split: str, table: pd.DataFrame, predictions: list[str]):
    """({subset: scores}, [per-image rows of each subset]) of one variant's captions of one split."""
    scores, per_image = {}, []
    for subset, mask in subset_masks(table).items():
        if not mask.any():
            continue  # a subset with no image is not scored
        chosen = [p for p, m in zip(predictions, mask) if m]
        subset_scores, image_scores = profile.score(chosen, table[mask].reset_index(drop=True))
        scores[subset] = subset_scores
        per_image.append(image_scores.assign(split=split, subset=subset, variant=variant))
    return scores, per_image


def caption_and_score(variant: str, params: Params) -> tuple[dict, pd.DataFrame]:
    """Greedy captions of every validation and test image by paths.vlm_dir(variant), scored as evaluate
    scores: ({split: {subset: scores}}, per-image rows in evaluate's per_image format, variant=`variant`)."""
    profile = load_hooks(params, "evaluate")
    splits = evaluation_splits(profile)
    scores, per_image = {}, []
    with shard_pool(params.compute, captioner_work(params, (variant,)), variant) as captioners:
        for split, (table, embeddings) in splits.items():
            predictions = caption_with(captioners, variant, params, embeddings)
            scores[split], rows = score_split(profile, variant, split, table, predictions)
            per_image += rows
    return scores, pd.concat(per_image, ignore_index=True)
