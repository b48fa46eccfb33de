"""Stage `prepare`: the data every later stage reads, as tables under data/world/.

* world profile: sample the shapes world and write its tables, pixels and a summary metric;
* coco profile: read a COCO-format captions JSON and its image folder into the same table contracts
  (real_train, test, concepts, plus val; text_corpus stays empty: a pretrained LLM brings its own
  knowledge). Missing or unreadable images are counted in metrics/prepare.json.
"""

from __future__ import annotations

import logging

import pandas as pd

from synth2 import paths
from synth2.coco import build_coco
from synth2.io import write_json, write_parquet, write_tensors
from synth2.params import Params
from synth2.stage import stage_main
from synth2.world.datasets import build_world

log = logging.getLogger("synth2")


def prepare_world(params: Params) -> None:
    world = build_world(params.world, params.seed)
    write_tensors({"pixels": world.pixels}, paths.PIXELS)
    write_parquet(world.pool, paths.POOL)
    write_parquet(world.real_train, paths.REAL_TRAIN)
    write_parquet(world.text_corpus, paths.TEXT_CORPUS)
    write_parquet(world.test, paths.TEST)
    write_parquet(world.concepts, paths.CONCEPTS)
    summary = world.summary()
    write_json(summary, paths.PREPARE_METRICS)
    log.info("wrote %s (%s) and %s", paths.WORLD, summary["counts"], paths.PREPARE_METRICS)


def prepare_coco(params: Params) -> None:
    data = build_coco(params.coco, params.seed)
    write_parquet(data.real_train, paths.REAL_TRAIN)
    write_parquet(data.val, paths.VAL)
    write_parquet(data.test, paths.TEST)
    write_parquet(data.concepts, paths.CONCEPTS)
    # Declared as a dep of caption_lm, which in this profile snapshots a pretrained LLM instead of training one.
    write_parquet(pd.DataFrame({"caption": pd.Series([], dtype=str)}), paths.TEXT_CORPUS)
    write_json(data.report, paths.PREPARE_METRICS)
    log.info(
        "wrote %s from %s (%s; images %s)",
        paths.WORLD,
        params.coco.annotations,
        data.report["counts"],
        {k: v for k, v in data.report["images"].items() if k != "examples"},
    )


def run(params: Params) -> None:
    if params.profile == "coco":
        prepare_coco(params)
    else:
        prepare_world(params)


main = stage_main("prepare", run)

if __name__ == "__main__":
    main()
