"""captions hooks (world): the trained caption LM, prompted with its own prompt prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.profiles import CaptionGenerator

if TYPE_CHECKING:
    from synth2.params import Params


def caption_generator(params: Params) -> CaptionGenerator:
    """The caption LM snapshot; every prompt starts with its prompt prefix (the style token when it has one)."""
    from synth2.models.caption_lm import generate_captions, load_caption_lm, prompt_prefix

    model, tokenizer = load_caption_lm(paths.CAPTION_LM)
    prefix = prompt_prefix(model)
    p = params.captions

    def generate(prompts: list[str], seed: int) -> list[str]:
        prompts = [prefix + prompt for prompt in prompts]
        return generate_captions(
            model, tokenizer, prompts, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed
        )

    return CaptionGenerator(generate, provenance={"prompt_prefix": prefix})
