"""captions hooks (coco): the snapshotted LLM through its chat template, cleaned to one caption."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from synth2 import paths
from synth2.io import read_parquet
from synth2.profiles import CaptionGenerator

if TYPE_CHECKING:
    from synth2.params import Params

log = logging.getLogger("synth2")


def caption_generator(params: Params) -> CaptionGenerator:
    """The snapshotted LLM on `device` in `coco.captions.dtype`; prompts through its chat template.

    Style conditioning (`coco.captions.few_shot` = k > 0): every prompt starts with k human training
    captions as examples of the wanted style, drawn per prompt with the seed (in-context learning).
    """
    import numpy as np

    from synth2.coco.captions import chat_prompts, clean_caption, few_shot_prompt
    from synth2.models.caption_lm import generate_captions, load_caption_lm
    from synth2.pretrained import resolve_device, resolve_dtype

    p, c = params.captions, params.coco.captions
    device = resolve_device(params.device)
    model, tokenizer = load_caption_lm(paths.CAPTION_LM, dtype=resolve_dtype(c.dtype, device))
    model = model.to(device)
    log.info("caption LLM on %s in %s", device, model.dtype)
    examples = read_parquet(paths.REAL_TRAIN, columns=["caption"])["caption"].tolist() if c.few_shot else []

    def generate(prompts: list[str], seed: int) -> list[str]:
        if examples:
            rng = np.random.default_rng([seed, 2])
            prompts = [few_shot_prompt(prompt, examples, c.few_shot, rng) for prompt in prompts]
        inputs = chat_prompts(tokenizer, prompts) if c.chat_template else prompts
        raw = generate_captions(model, tokenizer, inputs, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed)
        return [clean_caption(text, c.max_words) for text in raw]

    provenance = {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "few_shot": c.few_shot,
    }
    return CaptionGenerator(generate, provenance)
