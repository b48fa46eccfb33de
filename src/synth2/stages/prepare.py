"""Stage `prepare`: sample the shapes world and write its tables, pixels and a summary metric."""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.io import write_json, write_parquet, write_tensors
from synth2.params import Params
from synth2.stage import stage_main
from synth2.world.datasets import build_world

log = logging.getLogger("synth2")


def run(params: Params) -> None:
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


main = stage_main("prepare", run)

if __name__ == "__main__":
    main()
