"""Stage `caption_lm`: train the small causal LM that plays the paper's LLM.

It learns the text corpus only (the world's "internet text"), formatted as concept prompt → caption so
that it follows prompts as an instruction-tuned LLM does. Its word-level vocabulary also covers the
human captions' words, as a real LLM's vocabulary covers annotators' words: the VLM that later starts
from this LM must be able to write them.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from synth2 import paths, tracking
from synth2.io import read_parquet, write_curve, write_json
from synth2.models.caption_lm import build_training_examples, save_caption_lm, train_caption_lm
from synth2.models.tokenizer import build_tokenizer
from synth2.params import Params
from synth2.stage import stage_main

log = logging.getLogger("synth2")
CURVE_WINDOW = 25  # steps averaged per point of the loss plot


def smoothed_curve(losses: list[float], window: int = CURVE_WINDOW) -> list[tuple[int, float]]:
    return [(min(i + window, len(losses)), float(np.mean(losses[i : i + window]))) for i in range(0, len(losses), window)]


def run(params: Params) -> None:
    corpus = read_parquet(paths.TEXT_CORPUS, "prepare", columns=["caption", "colour", "shape"])
    human = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption"])
    rng = np.random.default_rng(params.seed)
    examples = build_training_examples(
        corpus["caption"].tolist(), corpus["colour"].tolist(), corpus["shape"].tolist(),
        params.captions, params.caption_lm.unprompted_fraction, rng,
    )  # fmt: skip
    vocabulary_texts = [t for e in examples for t in (e.prompt, e.caption)] + human["caption"].tolist()
    tokenizer = build_tokenizer(vocabulary_texts)

    start = time.perf_counter()
    model, losses = train_caption_lm(examples, tokenizer, params.caption_lm, params.seed)
    seconds = time.perf_counter() - start
    save_caption_lm(model, tokenizer, paths.CAPTION_LM)

    curve = smoothed_curve(losses)
    write_curve(curve, paths.CAPTION_LM_LOSS)
    tail = losses[-max(1, len(losses) // 10) :]
    write_json(
        {
            "final_loss": float(np.mean(tail)),
            "first_loss": float(losses[0]),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
            "examples": len(examples),
            "train_seconds": round(seconds, 1),
        },
        paths.CAPTION_LM_METRICS,
    )
    tracking.log_model(paths.CAPTION_LM, "caption_lm")
    log.info("caption LM: loss %.3f -> %.3f in %.0f s, saved to %s", losses[0], np.mean(tail), seconds, paths.CAPTION_LM)


main = stage_main("caption_lm", run)

if __name__ == "__main__":
    main()
