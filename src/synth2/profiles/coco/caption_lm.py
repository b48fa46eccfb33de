"""caption_lm hooks (coco): a pretrained LLM, loaded, checked and snapshotted.

The LLM is a Hugging Face folder (or hub id), or one GGUF file (`coco.caption_lm.gguf_file`, or a
`pretrained` path ending in .gguf), dequantised into a plain model (synth2.models.gguf): the snapshot in
models/caption_lm is a normal Hugging Face folder either way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from synth2.profiles import CaptionLM

if TYPE_CHECKING:
    from synth2.params import Params

log = logging.getLogger("synth2")


def make_caption_lm(params: Params) -> CaptionLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth2.models.gguf import load_gguf_causal_lm, split_gguf_source
    from synth2.pretrained import PretrainedError, load_or_explain, quiet_loading, resolve_source

    p, param = params.coco.caption_lm, "coco.caption_lm.pretrained"
    source, gguf_file = split_gguf_source(p.pretrained, p.gguf_file)
    directory = resolve_source(source, param, hub_files=[gguf_file] if gguf_file else None)
    if gguf_file:
        model, tokenizer = load_gguf_causal_lm(directory, gguf_file, param, p.pretrained)
    else:
        with quiet_loading():
            model = load_or_explain(
                param, source, "a causal LM", lambda: AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
            )
            tokenizer = load_or_explain(
                param, source, "its tokenizer", lambda: AutoTokenizer.from_pretrained(directory)
            )
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise PretrainedError(
            f"{param}: the tokenizer of '{source}' has neither an eos nor a pad token; captions cannot be batched"
        )
    metrics = {
        "source": p.pretrained,
        "gguf_file": gguf_file,
        "architecture": type(model).__name__,
        "dtype": str(model.dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "parameters": sum(w.numel() for w in model.parameters()),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
    log.info("caption LLM %s (%s, %.1fM params)", source, type(model).__name__, metrics["parameters"] / 1e6)
    return CaptionLM(model, tokenizer, metrics)
