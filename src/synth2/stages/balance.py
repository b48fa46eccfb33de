"""Stage `balance`: semantic diversity balancing of the LLM captions.

Writes the balanced selection (deduplicated, labelled, balanced over concepts and embedding clusters),
an unbalanced selection of the same size for the ablation (unprompted samples, no dedup, no balancing),
and a diversity report of the raw prompted set and both selections, all measured against one shared
clustering so that "clusters covered" compares like with like, and against the profile's concepts.

The profile labels the captions (synth2.profiles): the world parses each caption's colour-shape
combination; the coco profile takes the class a caption was prompted with for the balanced selection
and the first class a caption names for the raw and unbalanced sets, which have no prompt to go by.

The MiniLM text embedding is sharded (`compute.shards`, synth2.compute): in this process, or on Ray
workers that each load MiniLM once (`compute.engine: ray`); one shard is the unsharded stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.balancing import balance_captions, unbalanced_selection
from synth2.compute.pool import ShardWork, shard_pool
from synth2.diversity import assign_clusters, diversity_report, fit_kmeans
from synth2.io import read_parquet, require_rows, write_json, write_parquet
from synth2.params import Params
from synth2.profiles import CaptionLabellers, load_hooks
from synth2.stage import end_process, stage_main
from synth2.text_embed import embed_texts, load_model

log = logging.getLogger("synth2")


class CachedEmbedder:
    """Embed each distinct text once: the raw set, the selections and balancing share most captions."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray]) -> None:
        self.embed = embed
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.embed(missing)))
        return np.stack([self.vectors[t] for t in texts]) if len(texts) else np.zeros((0, 384), np.float32)


def embed_shard(model, texts: list[str]) -> np.ndarray:
    """MiniLM vectors of one shard (`model` is the worker's loaded MiniLM, which embed_texts reuses)."""
    return embed_texts(texts)


def run(params: Params) -> None:
    prompted = read_parquet(paths.PROMPTED_CAPTIONS, columns=["caption", "concept"])
    unprompted = read_parquet(paths.UNPROMPTED_CAPTIONS, columns=["caption"])
    # A caption with no text would fail deep inside labelling, after the embedding work: stop first.
    require_rows(prompted, paths.PROMPTED_CAPTIONS, ["caption", "concept"])
    require_rows(unprompted, paths.UNPROMPTED_CAPTIONS, ["caption"])
    labels = load_hooks(params, "balance").caption_labellers(params)
    with shard_pool(params.compute, ShardWork(load_model, ()), "balance") as encoders:
        embed = CachedEmbedder(lambda texts: encoders.map(embed_shard, texts))
        balanced, unbalanced, diversity = balance(params, prompted, unprompted, labels, embed)
    tracking.log_metrics({"compute": encoders.timings})
    write_parquet(balanced, paths.BALANCED)
    write_parquet(unbalanced, paths.UNBALANCED)
    write_json(diversity, paths.DIVERSITY_REPORT)
    for name in ("prompted_raw", "balanced", "unbalanced"):
        d = diversity[name]
        log.info(
            "%-12s n=%d unique=%.2f concept entropy=%.2f bits covered=%s/%s max/min=%s",
            name,
            d["n"],
            d["unique_ratio"],
            d["concept_entropy"],
            d["concepts_covered"],
            d["concepts_total"],
            d["max_min_concept_ratio"],
        )


def balance(
    params: Params, prompted: pd.DataFrame, unprompted: pd.DataFrame, labels: CaptionLabellers, embed: CachedEmbedder
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    balanced, steps = balance_captions(
        prompted, params.balance, params.seed, embed, labels.prompted, unlabelled_hint=labels.unlabelled_hint
    )
    unbalanced = unbalanced_selection(unprompted, len(balanced), params.seed, labels.unprompted)

    raw = prompted["caption"].astype(str).str.lower().str.strip().tolist()
    _, centers = fit_kmeans(embed(raw), params.balance.n_clusters, params.seed)

    def report(captions: list[str], concepts: list) -> dict:
        vectors = embed(captions)
        clusters = assign_clusters(vectors, centers)
        k, seed = params.balance.n_clusters, params.seed
        return diversity_report(captions, concepts, vectors, labels.concepts, clusters, n_clusters=k, seed=seed)

    diversity = {
        "prompted_raw": report(raw, labels.unprompted(pd.DataFrame({"caption": raw}))["concept"].tolist()),
        "balanced": report(balanced["caption"].tolist(), balanced["concept"].tolist()),
        "unbalanced": report(unbalanced["caption"].tolist(), unbalanced["concept"].tolist()),
        "balancing_steps": steps,
    }
    return balanced, unbalanced, diversity


main = stage_main("balance", run)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
