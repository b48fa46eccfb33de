"""Stage `caption_lm`: train the small causal LM that plays the paper's LLM.

It learns the text corpus only (the world's "internet text"), formatted as concept prompt → caption so
that it follows prompts as an instruction-tuned LLM does. Its word-level vocabulary also covers the
human captions' words, as a real LLM's vocabulary covers annotators' words: the VLM that later starts
from this LM must be able to write them.

In the coco profile nothing is trained: the pretrained LLM named by `caption_lm.pretrained` (a local
directory or a hub id) is loaded as a causal LM with its tokenizer, checked, and saved to the same
output, so the captions stage, DVC and MLflow see one versioned snapshot of the generator.
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
from synth2.pretrained import PretrainedError, load_or_explain, quiet_loading, resolve_source
from synth2.stage import stage_main

log = logging.getLogger("synth2")
CURVE_WINDOW = 25  # steps averaged per point of the loss plot


def smoothed_curve(losses: list[float], window: int = CURVE_WINDOW) -> list[tuple[int, float]]:
    return [
        (min(i + window, len(losses)), float(np.mean(losses[i : i + window]))) for i in range(0, len(losses), window)
    ]


def run(params: Params) -> None:
    if params.profile == "coco":
        snapshot_pretrained_lm(params)
    else:
        train_world_lm(params)


def load_pretrained_lm(source: str, param: str):
    """(model, tokenizer) of any causal LM at a local directory or hub id, in its stored precision."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = resolve_source(source, param)
    with quiet_loading():
        model = load_or_explain(
            param, source, "a causal LM", lambda: AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
        )
        tokenizer = load_or_explain(param, source, "its tokenizer", lambda: AutoTokenizer.from_pretrained(directory))
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise PretrainedError(
            f"{param}: the tokenizer of '{source}' has neither an eos nor a pad token; captions cannot be batched"
        )
    return model, tokenizer


def snapshot_pretrained_lm(params: Params) -> None:
    source = params.caption_lm.pretrained
    start = time.perf_counter()
    model, tokenizer = load_pretrained_lm(source, "caption_lm.pretrained")
    save_caption_lm(model, tokenizer, paths.CAPTION_LM)
    write_curve([], paths.CAPTION_LM_LOSS)  # declared plot: nothing is trained in this profile
    write_json(
        {
            "source": source,
            "architecture": type(model).__name__,
            "dtype": str(model.dtype).removeprefix("torch."),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
            "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "snapshot_seconds": round(time.perf_counter() - start, 1),
        },
        paths.CAPTION_LM_METRICS,
    )
    tracking.log_model(paths.CAPTION_LM, "caption_lm")
    log.info(
        "caption LLM %s (%s, %.1fM params) snapshotted to %s",
        source,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        paths.CAPTION_LM,
    )


def train_world_lm(params: Params) -> None:
    corpus = read_parquet(paths.TEXT_CORPUS, "prepare", columns=["caption", "colour", "shape"])
    human = read_parquet(paths.REAL_TRAIN, "prepare", columns=["caption"])
    rng = np.random.default_rng(params.seed)
    examples = build_training_examples(
        corpus["caption"].tolist(),
        corpus["colour"].tolist(),
        corpus["shape"].tolist(),
        params.captions,
        params.caption_lm.unprompted_fraction,
        rng,
    )
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
    log.info(
        "caption LM: loss %.3f -> %.3f in %.0f s, saved to %s", losses[0], np.mean(tail), seconds, paths.CAPTION_LM
    )


main = stage_main("caption_lm", run)

if __name__ == "__main__":
    main()
