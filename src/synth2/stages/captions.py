"""Stage `captions`: the LLM caption generator.

Samples two sets from the caption_lm stage's model, through the profile's generator (the coco profile
runs a chat-tuned LLM on `device` and cleans each output to one caption):

* prompted: one caption per concept prompt, concepts cycled evenly (the paper's class lists);
* unprompted: samples with no concept, the LM's natural skewed distribution, for the ablation.

Sampling is sharded (`compute.shards`, synth2.compute): in this process, or on Ray workers that each load
the generator once (`compute.engine: ray`); one shard is the unsharded stage.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd

from synth2 import paths, tracking
from synth2.compute.pool import ShardPool, ShardWork, shard_pool
from synth2.io import read_parquet, write_parquet
from synth2.params import Params
from synth2.profiles import CaptionGenerator, load_hooks
from synth2.stage import end_process, stage_main

log = logging.getLogger("synth2")


def even_concepts(concepts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n concepts, each used ⌊n/k⌋ or ⌈n/k⌉ times, in seeded random order."""
    repeated = np.resize(np.arange(len(concepts)), n)
    return [concepts[i] for i in rng.permutation(repeated)]


def sample(generator: CaptionGenerator, prompts: list[str], seed: int) -> list[str]:
    return generator.generate(prompts, seed)


def provenance_of(generator: CaptionGenerator) -> dict:
    return generator.provenance


def run(params: Params) -> None:
    concepts = read_parquet(paths.CONCEPTS, columns=["concept", "kind"])
    # The generator's inputs (dvc.yaml deps): the LM snapshot, and the human captions coco's few-shot
    # prompts quote.
    work = ShardWork(
        partial(load_hooks(params, "captions").caption_generator, params), (paths.CAPTION_LM, paths.REAL_TRAIN)
    )
    with shard_pool(params.compute, work, "captions") as generators:
        prompted, unprompted = sample_captions(params, concepts, generators)
    tracking.log_metrics({"compute": generators.timings})
    write_parquet(prompted, paths.PROMPTED_CAPTIONS)
    write_parquet(unprompted, paths.UNPROMPTED_CAPTIONS)
    log.info(
        "wrote %s and %s; e.g. %r", paths.PROMPTED_CAPTIONS, paths.UNPROMPTED_CAPTIONS, prompted["caption"].iloc[0]
    )


def sample_captions(params: Params, concepts: pd.DataFrame, generators: ShardPool) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = params.captions
    rng = np.random.default_rng(params.seed)
    kind_of = dict(zip(concepts["concept"], concepts["kind"]))
    prompted_concepts = even_concepts(concepts["concept"].tolist(), p.n_prompted, rng)
    provenance = {
        "generator": str(paths.CAPTION_LM),
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_new_tokens": p.max_new_tokens,
        "seed": params.seed,
    } | generators.query(provenance_of)

    prompts = [p.prompt_template.format(concepts=c) for c in prompted_concepts]
    log.info("sampling %d prompted captions", len(prompts))
    prompted = pd.DataFrame(
        {
            "caption": generators.map(sample, prompts, params.seed),
            "concept": prompted_concepts,
            "concept_kind": [kind_of[c] for c in prompted_concepts],
            "prompt": prompts,
        }
        | provenance
    )
    log.info("sampling %d unprompted captions", p.n_unprompted)
    unprompted = pd.DataFrame(
        {
            "caption": generators.map(sample, [p.unprompted_template] * p.n_unprompted, params.seed + 1),
            "concept": pd.Series([None] * p.n_unprompted, dtype=object),
            "concept_kind": "none",
            "prompt": p.unprompted_template,
        }
        | provenance
    )
    return prompted, unprompted


main = stage_main("captions", run)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
