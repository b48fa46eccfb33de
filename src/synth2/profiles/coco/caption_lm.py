"""caption_lm hooks (coco): a pretrained LLM, loaded, checked and snapshotted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from synth2.profiles import CaptionLM

if TYPE_CHECKING:
    from synth2.params import Params

log = logging.getLogger("synth2")


def make_caption_lm(params: Params) -> CaptionLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth2.pretrained import PretrainedError, load_or_explain, quiet_loading, resolve_source

    source, param = params.coco.caption_lm.pretrained, "coco.caption_lm.pretrained"
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
    metrics = {
        "source": source,
        "architecture": type(model).__name__,
        "dtype": str(model.dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "parameters": sum(w.numel() for w in model.parameters()),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
    log.info("caption LLM %s (%s, %.1fM params)", source, type(model).__name__, metrics["parameters"] / 1e6)
    return CaptionLM(model, tokenizer, metrics)
