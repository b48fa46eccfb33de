"""Named size overlays on params.yaml: `tiny` (every stage in seconds: the tests), `small` (about a
minute for the whole pipeline: benchmarks and quick studies). An overlay changes sizes only; every
other value comes from the project's params.yaml."""

from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = {
    "world": {
        "prepare": {
            "pool_size": 400,
            "real_train_size": 200,
            "text_corpus_size": 1500,
            "val_per_combo": 2,
            "test_per_combo": 2,
        },
        # 800 steps: with style conditioning (the default) a quarter of the examples are human captions,
        # and at 300 steps the tiny LM never learned to write 7 of the 48 prompted concepts, which
        # gate_balanced rightly refused (coverage 41/48); at 800 it covers all 48.
        "caption_lm": {"steps": 800, "n_embd": 64, "batch_size": 32},
        "image_encoder": {"steps": 60, "embed_dim": 32, "batch_size": 64},
    },
    "captions": {"n_prompted": 200, "n_unprompted": 100, "batch_size": 100},
    "balance": {"target_size": 80, "n_clusters": 8},
    "prior": {"steps": 60, "num_inference_steps": 5, "attention_head_dim": 16},
    "synthesize": {"timing_captions": 32},
    "train_vlm": {"steps": 40, "batch_size": 16},
    "evaluate": {"n_examples": 8},
    # The pixel path, when a test switches it on (pixel_space.variants): a decoder of seconds.
    "pixel_space": {"decoder": {"channels": [8, 16, 16], "steps": 30, "batch_size": 16}, "num_inference_steps": 3},
}


def deep_merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in, nested mappings key by key (neither argument is changed)."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


SMALL: dict[str, Any] = deep_merge(
    TINY,
    {
        "world": {
            "prepare": {"pool_size": 2000, "real_train_size": 400, "text_corpus_size": 5000},
            "image_encoder": {"steps": 200},
        },
        "captions": {"n_prompted": 600, "n_unprompted": 300},
        "balance": {"target_size": 200},
        "prior": {"steps": 200},
        "train_vlm": {"steps": 150},
    },
)

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "small": SMALL, "default": {}}
