"""Stage `captions`: the LLM caption generator.

Loads any causal LM from `captions.model_path` (default: the `caption_lm` output) and writes two sets:

* prompted: one sampled caption per concept prompt, concepts cycled evenly (the paper's class lists);
* unprompted: samples with no concept, the LM's natural skewed distribution, for the ablation.

In the coco profile the LM is a pretrained LLM snapshot: it runs on `device` in `captions.dtype`, prompts
go through the tokenizer's chat template when it has one (`captions.chat_template`), and each output is
cleaned to one caption sentence of at most `captions.max_words` words.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

from synth2 import paths
from synth2.errors import Synth2Error
from synth2.io import read_parquet, write_parquet
from synth2.models.caption_lm import generate_captions
from synth2.params import Params
from synth2.pretrained import quiet_loading, resolve_device, resolve_dtype
from synth2.stage import stage_main

log = logging.getLogger("synth2")


def load_generator(model_path: str, load_kwargs: dict | None = None):
    path = Path(model_path)
    if not path.is_dir():
        produced = " (run 'dvc repro caption_lm' first)" if path == paths.CAPTION_LM else ""
        raise Synth2Error(
            f"captions.model_path: no model directory at '{model_path}'{produced}; "
            "point it at a local directory holding a causal LM saved with save_pretrained"
        )
    try:
        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(path, **(load_kwargs or {})), AutoTokenizer.from_pretrained(
                path
            )
    except (OSError, ValueError) as exc:
        raise Synth2Error(f"captions.model_path: cannot load a causal LM from '{model_path}': {exc}") from None


def load_pretrained_generator(params: Params):
    """The coco profile's LLM on its device, in `captions.dtype`."""
    device = resolve_device(params.device)
    model, tokenizer = load_generator(
        params.captions.model_path, {"dtype": resolve_dtype(params.captions.dtype, device)}
    )
    log.info("caption LLM on %s in %s", device, model.dtype)
    return model.to(device), tokenizer


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


def even_concepts(concepts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n concepts, each used ⌊n/k⌋ or ⌈n/k⌉ times, in seeded random order."""
    repeated = np.resize(np.arange(len(concepts)), n)
    return [concepts[i] for i in rng.permutation(repeated)]


def run(params: Params) -> None:
    p = params.captions
    concepts = read_parquet(paths.CONCEPTS, "prepare", columns=["concept", "kind"])
    coco = params.profile == "coco"
    model, tokenizer = load_pretrained_generator(params) if coco else load_generator(p.model_path)
    rng = np.random.default_rng(params.seed)
    kind_of = dict(zip(concepts["concept"], concepts["kind"]))
    prompted_concepts = even_concepts(concepts["concept"].tolist(), p.n_prompted, rng)

    def generate(prompts: list[str], seed: int) -> list[str]:
        if not coco:
            return generate_captions(
                model, tokenizer, prompts, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed
            )
        inputs = chat_prompts(tokenizer, prompts) if p.chat_template else prompts
        raw = generate_captions(model, tokenizer, inputs, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed)
        return [clean_caption(text, p.max_words) for text in raw]

    provenance = {
        "generator": p.model_path,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_new_tokens": p.max_new_tokens,
        "seed": params.seed,
    }
    if coco:
        provenance |= {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
    prompts = [p.prompt_template.format(concepts=c) for c in prompted_concepts]
    log.info("sampling %d prompted captions from %s", len(prompts), p.model_path)
    prompted = pd.DataFrame(
        {
            "caption": generate(prompts, params.seed),
            "concept": prompted_concepts,
            "concept_kind": [kind_of[c] for c in prompted_concepts],
            "prompt": prompts,
        }
        | provenance
    )
    log.info("sampling %d unprompted captions", p.n_unprompted)
    unprompted = pd.DataFrame(
        {
            "caption": generate([p.unprompted_template] * p.n_unprompted, params.seed + 1),
            "concept": pd.Series([None] * p.n_unprompted, dtype=object),
            "concept_kind": "none",
            "prompt": p.unprompted_template,
        }
        | provenance
    )
    write_parquet(prompted, paths.PROMPTED_CAPTIONS)
    write_parquet(unprompted, paths.UNPROMPTED_CAPTIONS)
    log.info(
        "wrote %s and %s; e.g. %r", paths.PROMPTED_CAPTIONS, paths.UNPROMPTED_CAPTIONS, prompted["caption"].iloc[0]
    )


main = stage_main("captions", run)

if __name__ == "__main__":
    main()
