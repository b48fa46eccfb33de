"""Stage `captions`: the LLM caption generator.

Loads any causal LM from `captions.model_path` (default: the `caption_lm` output) and writes two sets:

* prompted: one sampled caption per concept prompt, concepts cycled evenly (the paper's class lists);
* unprompted: samples with no concept, the LM's natural skewed distribution, for the ablation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

from synth2 import paths
from synth2.errors import Synth2Error
from synth2.io import read_parquet, write_parquet
from synth2.models.caption_lm import generate_captions
from synth2.params import Params
from synth2.stage import stage_main

log = logging.getLogger("synth2")


def load_generator(model_path: str):
    path = Path(model_path)
    if not path.is_dir():
        produced = " (run 'dvc repro caption_lm' first)" if path == paths.CAPTION_LM else ""
        raise Synth2Error(
            f"captions.model_path: no model directory at '{model_path}'{produced}; "
            "point it at a local directory holding a causal LM saved with save_pretrained"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise Synth2Error(f"captions.model_path: cannot load a causal LM from '{model_path}': {exc}") from None


def even_concepts(concepts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n concepts, each used ⌊n/k⌋ or ⌈n/k⌉ times, in seeded random order."""
    repeated = np.resize(np.arange(len(concepts)), n)
    return [concepts[i] for i in rng.permutation(repeated)]


def run(params: Params) -> None:
    p = params.captions
    concepts = read_parquet(paths.CONCEPTS, "prepare", columns=["concept", "kind"])
    model, tokenizer = load_generator(p.model_path)
    rng = np.random.default_rng(params.seed)
    kind_of = dict(zip(concepts["concept"], concepts["kind"]))
    prompted_concepts = even_concepts(concepts["concept"].tolist(), p.n_prompted, rng)

    def generate(prompts: list[str], seed: int) -> list[str]:
        return generate_captions(model, tokenizer, prompts, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, seed)

    provenance = {"generator": p.model_path, "temperature": p.temperature, "top_p": p.top_p,
                  "max_new_tokens": p.max_new_tokens, "seed": params.seed}  # fmt: skip
    prompts = [p.prompt_template.format(concepts=c) for c in prompted_concepts]
    log.info("sampling %d prompted captions from %s", len(prompts), p.model_path)
    prompted = pd.DataFrame({
        "caption": generate(prompts, params.seed),
        "concept": prompted_concepts,
        "concept_kind": [kind_of[c] for c in prompted_concepts],
        "prompt": prompts,
    } | provenance)  # fmt: skip
    log.info("sampling %d unprompted captions", p.n_unprompted)
    unprompted = pd.DataFrame({
        "caption": generate([p.unprompted_template] * p.n_unprompted, params.seed + 1),
        "concept": pd.Series([None] * p.n_unprompted, dtype=object),
        "concept_kind": "none",
        "prompt": p.unprompted_template,
    } | provenance)  # fmt: skip
    write_parquet(prompted, paths.PROMPTED_CAPTIONS)
    write_parquet(unprompted, paths.UNPROMPTED_CAPTIONS)
    log.info("wrote %s and %s; e.g. %r", paths.PROMPTED_CAPTIONS, paths.UNPROMPTED_CAPTIONS, prompted["caption"].iloc[0])


main = stage_main("captions", run)

if __name__ == "__main__":
    main()
