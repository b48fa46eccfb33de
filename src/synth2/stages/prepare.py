"""Stage `prepare`: the data every later stage reads, as tables under data/prepared/.

The profile makes them: the shapes world samples its tables and pixels; the coco profile reads a
COCO-format captions JSON and its image folder into the same table contracts. The whole directory is
replaced at once, so a failed run leaves the previous data as it was.
"""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.io import atomic_path, write_json, write_tensors
from synth2.params import Params
from synth2.profiles import load_profile
from synth2.stage import stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    prepared = load_profile(params).prepare(params)
    with atomic_path(paths.PREPARED) as directory:
        directory.mkdir()
        for name, table in prepared.tables.items():
            table.to_parquet(directory / f"{name}.parquet", index=False)
        for name, array in prepared.arrays.items():
            write_tensors({name: array}, directory / f"{name}.safetensors")
    write_json(prepared.summary, paths.PREPARE_METRICS)
    log.info("wrote %s (%s)", paths.PREPARED, {name: len(table) for name, table in prepared.tables.items()})


main = stage_main("prepare", run, uses_torch=False)

if __name__ == "__main__":
    main()
