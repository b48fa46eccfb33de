"""caption_lm hooks (world): a small GPT-2 trained from scratch on the text corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import read_parquet
from synth2.profiles import CaptionLM

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from synth2.params import Params

STYLE_TOKEN = "<human>"  # the control token of the annotators' style


def make_caption_lm(params: Params) -> CaptionLM:
    """A small GPT-2 trained on the corpus. Its word-level vocabulary also covers the human captions'
    words, as a real LLM's vocabulary covers annotators' words: the VLM that later starts from this LM
    must be able to write them.

    Style conditioning (`world.caption_lm.human_style_fraction` > 0): the scarce human captions join the
    training data behind the control token STYLE_TOKEN, as that share of all examples (by repetition),
    and the snapshot's config records the token as its prompt prefix, so the captions stage asks for the
    annotators' style. The LM then has to compose that style with concepts no human caption shows.
    """
    import numpy as np

    from synth2.models import caption_lm
    from synth2.models.tokenizer import build_tokenizer
    from synth2.world.prompts import build_training_examples, styled

    p, c = params.world.caption_lm, params.captions
    corpus = read_parquet(paths.TEXT_CORPUS, columns=["caption", "colour", "shape"])
    human = read_parquet(paths.REAL_TRAIN, columns=["caption", "colour", "shape"])

    def examples_of(table: pd.DataFrame, rng: np.random.Generator) -> list:
        return build_training_examples(
            table["caption"].tolist(),
            table["colour"].tolist(),
            table["shape"].tolist(),
            c.prompt_template,
            c.unprompted_template,
            p.unprompted_fraction,
            rng,
        )

    examples = examples_of(corpus, np.random.default_rng(params.seed))
    control_tokens, prefix = [], ""
    if p.human_style_fraction > 0:
        # Its own random stream: the corpus examples are the same with and without style conditioning.
        human_examples = styled(examples_of(human, np.random.default_rng([params.seed, 1])), STYLE_TOKEN)
        copies = max(1, round(p.human_style_fraction / (1 - p.human_style_fraction) * len(examples) / len(human)))
        examples = examples + human_examples * copies
        control_tokens, prefix = [STYLE_TOKEN], f"{STYLE_TOKEN} "
    vocabulary = [t for e in examples for t in (e.prompt, e.caption)] + human["caption"].tolist()
    tokenizer = build_tokenizer(vocabulary, control_tokens=control_tokens)
    config = caption_lm.CaptionLMConfig(n_layer=p.n_layer, n_head=p.n_head, n_embd=p.n_embd, n_positions=p.n_positions)
    training = caption_lm.training_config(p.steps, p.batch_size, p.lr)
    model, losses = caption_lm.train_caption_lm(examples, tokenizer, config, training, params.seed)
    caption_lm.set_prompt_prefix(model, prefix)
    metrics = {
        "vocab_size": len(tokenizer),
        "parameters": sum(w.numel() for w in model.parameters()),
        "examples": len(examples),
        "human_style_examples": len(examples) - len(corpus),
    }
    return CaptionLM(model, tokenizer, metrics, losses)
