"""Sample the world's datasets, mirroring the paper's setting.

* unlabeled_pool: images over all attribute combinations (images are cheap, pairs are not);
* real_train: scarce human pairs, Zipf-skewed over colour-shape combinations, some combinations
  held out entirely;
* text_corpus: abundant captions over all combinations, Zipf-skewed, in the corpus style (the caption
  LM's knowledge);
* val, test: uniform over combinations, several human references per image, flagged seen/unseen;
  disjoint images. Model selection and every tuned default use val; test is for reporting only;
* concepts: what the caption generator is prompted with (colours, shapes, combinations).

Every table comes from its own child of one `SeedSequence`, so sizes of one split never shift another
(val, added later, has its own streams: the other tables and their pixels are as they were).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from synth2.params import WorldPrepareParams
from synth2.world.grammar import caption, templates
from synth2.world.scenes import COLOURS, SHAPES, Scene, all_combos, render, sample_scene


@dataclass
class World:
    pixels: np.ndarray  # uint8 [N, H, W, 3]; tables reference rows by image_id
    pool: pd.DataFrame
    real_train: pd.DataFrame
    text_corpus: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    concepts: pd.DataFrame
    held_out: list[str]

    def summary(self) -> dict:
        def skew(df: pd.DataFrame) -> dict:
            counts = df["combo"].value_counts()
            return {
                "combos": int(counts.size),
                "max_count": int(counts.max()),
                "min_count": int(counts.min()),
                "top10_share": round(float(counts.head(10).sum() / counts.sum()), 4),
            }

        return {
            "counts": {
                "unlabeled_pool": len(self.pool),
                "real_train": len(self.real_train),
                "text_corpus": len(self.text_corpus),
                "val": len(self.val),
                "val_unseen": int((~self.val["seen"]).sum()),
                "test": len(self.test),
                "test_seen": int(self.test["seen"].sum()),
                "test_unseen": int((~self.test["seen"]).sum()),
                "concepts": len(self.concepts),
                "images": len(self.pixels),
            },
            "held_out_combos": sorted(self.held_out),
            "n_held_out": len(self.held_out),
            "skew": {"real_train": skew(self.real_train), "text_corpus": skew(self.text_corpus)},
        }


def choose_held_out(rng: np.random.Generator, fraction: float) -> list[str]:
    """Hold out combinations while every colour and every shape keeps a seen combination,
    so the VLM can learn each word and the test of unseen pairs is one of composition."""
    combos = all_combos()
    n = round(fraction * len(combos))
    for _ in range(1000):
        picked = [combos[i] for i in rng.permutation(len(combos))[:n]]
        seen = set(combos) - set(picked)
        if {c for c, _ in seen} == set(COLOURS) and {s for _, s in seen} == set(SHAPES):
            return sorted(f"{c} {s}" for c, s in picked)
    raise ValueError(f"cannot hold out {fraction:.0%} of combinations and keep every colour and shape seen")


def zipf_weights(rng: np.random.Generator, n: int, a: float) -> np.ndarray:
    """Zipf weights 1/rank^a over a random ranking of n items."""
    ranks = rng.permutation(n) + 1
    weights = 1.0 / ranks**a
    return weights / weights.sum()


def _sample_scenes(
    rng: np.random.Generator,
    combos: list[tuple[str, str]],
    weights: np.ndarray | None,
    n: int,
    two_object_prob: float,
    scene_rng: np.random.Generator | None = None,
) -> list[Scene]:
    """n scenes over `combos`; with a separate `scene_rng` for the scenes' other attributes, the first k
    scenes are the same for every n >= k (`choice` draws its n uniforms up front)."""
    picks = rng.choice(len(combos), size=n, p=weights)
    scene_rng = scene_rng or rng
    return [sample_scene(scene_rng, *combos[i], two_object_prob) for i in picks]


def _scene_table(scenes: list[Scene], first_image_id: int | None) -> pd.DataFrame:
    df = pd.DataFrame([s.to_row() for s in scenes])
    if first_image_id is not None:
        df.insert(0, "image_id", np.arange(first_image_id, first_image_id + len(scenes), dtype=np.int64))
    return df


def concept_table() -> pd.DataFrame:
    rows = [{"concept": c, "kind": "colour", "colour": c, "shape": None} for c in COLOURS]
    rows += [{"concept": s, "kind": "shape", "colour": None, "shape": s} for s in SHAPES]
    rows += [{"concept": f"{c} {s}", "kind": "combo", "colour": c, "shape": s} for c, s in all_combos()]
    return pd.DataFrame(rows)


def _evaluation_scenes(rng: np.random.Generator, per_combo: int, two_object_prob: float) -> list[Scene]:
    """Uniform over colour-shape combinations: every combination `per_combo` times."""
    return [sample_scene(rng, c, s, two_object_prob) for c, s in all_combos() for _ in range(per_combo)]


def _evaluation_table(
    scenes: list[Scene], first_image_id: int, held_out: list[str], refs: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Scenes with `refs` human references each (distinct templates), flagged seen/unseen."""
    table = _scene_table(scenes, first_image_id)
    table["seen"] = ~table["combo"].isin(held_out)
    n_templates = len(templates("human"))
    table["references"] = [
        [caption(s, "human", rng, int(t)) for t in rng.permutation(n_templates)[:refs]] for s in scenes
    ]
    return table


def build_world(params: WorldPrepareParams, seed: int, progress: bool = True) -> World:
    """The world of `seed`. Everything but the human pairs is independent of `real_train_size`, and the human
    pairs of a smaller size are the first rows of a larger one (same ids, captions and pixels), so a sweep
    over the number of human pairs compares nested training sets on identical pool, corpus, val and test.

    That holds because every table draws from its own stream, rows are drawn one after another, and image
    ids run pool, test, val, then real_train (whose length is the only one that varies)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(11)]
    holdout_rng, pool_rng, real_rng, corpus_rng, test_rng, render_rng, val_rng, val_render_rng = streams[:8]
    real_caption_rng, test_render_rng, real_scene_rng = streams[8:]
    combos = all_combos()
    held_out = choose_held_out(holdout_rng, params.holdout_fraction)
    seen_combos = [c for c in combos if f"{c[0]} {c[1]}" not in held_out]

    pool = _sample_scenes(pool_rng, combos, None, params.pool_size, params.two_object_prob)
    real = _sample_scenes(
        real_rng,
        seen_combos,
        zipf_weights(real_rng, len(seen_combos), params.zipf_a),
        params.real_train_size,
        params.two_object_prob,
        real_scene_rng,
    )
    corpus = _sample_scenes(
        corpus_rng,
        combos,
        zipf_weights(corpus_rng, len(combos), params.zipf_a),
        params.text_corpus_size,
        params.two_object_prob,
    )
    test = _evaluation_scenes(test_rng, params.test_per_combo, params.two_object_prob)
    val = _evaluation_scenes(val_rng, params.val_per_combo, params.two_object_prob)

    pool_df = _scene_table(pool, 0)
    test_df = _evaluation_table(test, len(pool), held_out, params.test_refs, test_rng)
    val_df = _evaluation_table(val, len(pool) + len(test), held_out, params.test_refs, val_rng)
    real_df = _scene_table(real, len(pool) + len(test) + len(val))
    real_df["caption"] = [caption(s, "human", real_caption_rng) for s in real]
    corpus_df = _scene_table(corpus, None)
    corpus_df.insert(0, "caption", [caption(s, "corpus", corpus_rng) for s in corpus])

    def rendered(scenes: list[Scene], rng: np.random.Generator, what: str) -> list[np.ndarray]:
        bar = tqdm(scenes, desc=f"render {what}", disable=not progress, mininterval=2)
        return [render(s, params.image_size, rng) for s in bar]

    # Rows in image-id order; the pool and real_train share a stream (the pool first, then real_train in
    # order), so the pool's pixels do not move with the number of human pairs either.
    pool_pixels = rendered(pool, render_rng, "pool")
    real_pixels = rendered(real, render_rng, "real_train")
    pixels = pool_pixels + rendered(test, test_render_rng, "test") + rendered(val, val_render_rng, "val") + real_pixels
    return World(np.stack(pixels), pool_df, real_df, corpus_df, val_df, test_df, concept_table(), held_out)
