"""Prompting a chat-tuned LLM for captions and cleaning what it writes back into one caption."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def chat_prompts(tokenizer, texts: list[str]) -> list[str]:
    """Each prompt as a user turn of the tokenizer's chat template, ending in the assistant's cue."""
    if not getattr(tokenizer, "chat_template", None):
        return texts
    rendered = [
        tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ]
    # generate_captions tokenises with special tokens: a <bos> the template wrote itself would double.
    bos = tokenizer.bos_token
    if bos and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        rendered = [r.removeprefix(bos) for r in rendered]
    return rendered


_LABEL = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is) (?:a|the|one) (?:short )?caption\s*:?|caption\s*\d*\s*:)\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_EDGES = re.compile(r"^[^A-Za-z0-9]+|[\s\"'*`]+$")


def clean_caption(text: str, max_words: int) -> str:
    """One caption sentence: no "Caption:" label or quotes, cut at the first sentence end and at max_words."""
    text = _LABEL.sub("", " ".join(str(text).split()))
    text = _SENTENCE_END.split(text, maxsplit=1)[0]
    text = _EDGES.sub("", text)
    return " ".join(text.split()[:max_words])


def few_shot_prompt(prompt: str, examples: Sequence[str], k: int, rng: np.random.Generator) -> str:
    """`prompt` after k example captions of the annotators (drawn without replacement): the style to copy."""
    chosen = [examples[i] for i in rng.choice(len(examples), size=min(k, len(examples)), replace=False)]
    shown = "\n".join(f"- {' '.join(str(caption).split())}" for caption in chosen)
    return f"Examples of the captions wanted, in their style:\n{shown}\n\n{prompt}"
