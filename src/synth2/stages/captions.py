"""Stage `captions`: the LLM caption generator.

Samples two sets from the caption_lm stage's model, through the profile's generator (the coco profile
runs a chat-tuned LLM on `device` and cleans each output to one caption):

* prompted: one caption per concept prompt, concepts cycled evenly (the paper's class lists);
* unprompted: samples with no concept, the LM's natural skewed distribution, for the ablation.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from synth2 import paths
from synth2.io import read_parquet, write_parquet
from synth2.params import Params
from synth2.profiles import load_profile
from synth2.stage import stage_main

log = logging.getLogger("synth2")


def even_concepts(concepts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n concepts, each used ⌊n/k⌋ or ⌈n/k⌉ times, in seeded random order."""
    repeated = np.resize(np.arange(len(concepts)), n)
    return [concepts[i] for i in rng.permutation(repeated)]


def run(params: Params) -> None:
    p = params.captions
    concepts = read_parquet(paths.CONCEPTS, "prepare", columns=["concept", "kind"])
    generator = load_profile(params).caption_generator(params)
    rng = np.random.default_rng(params.seed)
    kind_of = dict(zip(concepts["concept"], concepts["kind"]))
    prompted_concepts = even_concepts(concepts["concept"].tolist(), p.n_prompted, rng)
    provenance = {
        "generator": str(paths.CAPTION_LM),
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_new_tokens": p.max_new_tokens,
        "seed": params.seed,
    } | generator.provenance

    prompts = [p.prompt_template.format(concepts=c) for c in prompted_concepts]
    log.info("sampling %d prompted captions", len(prompts))
    prompted = pd.DataFrame(
        {
            "caption": generator.generate(prompts, params.seed),
            "concept": prompted_concepts,
            "concept_kind": [kind_of[c] for c in prompted_concepts],
            "prompt": prompts,
        }
        | provenance
    )
    log.info("sampling %d unprompted captions", p.n_unprompted)
    unprompted = pd.DataFrame(
        {
            "caption": generator.generate([p.unprompted_template] * p.n_unprompted, params.seed + 1),
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
