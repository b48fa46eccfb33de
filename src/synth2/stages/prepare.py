"""Stage `prepare`: the data every later stage reads, under data/prepared/.

The profile makes them: the shapes world samples its tables and pixels; the coco profile reads a
COCO-format captions JSON and its image folder into the same table contracts. Each image set (unlabelled
pool, human pairs, validation, test) is one output directory holding its table and (world) its pixels row
for row; the text corpus and the concepts are files. Separate outputs let each stage depend on what it
reads: DVC re-runs a stage only when the sets it reads changed. All of them land together or not at all.
"""

from __future__ import annotations

import logging

from synth2 import paths
from synth2.io import atomic_path, write_json, write_parquet, write_tensors
from synth2.params import Params
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    prepared = load_hooks(params, "prepare").prepare(params)
    for name, table in prepared.image_sets.items():
        with atomic_path(paths.image_set(name)) as directory:
            directory.mkdir()
            table.to_parquet(directory / paths.image_table(name).name, index=False)
            if name in prepared.pixels:
                write_tensors({"pixels": prepared.pixels[name]}, directory / paths.image_pixels(name).name)
    write_parquet(prepared.text_corpus, paths.TEXT_CORPUS)
    write_parquet(prepared.concepts, paths.CONCEPTS)
    write_json(prepared.summary, paths.PREPARE_METRICS)
    sizes = {name: len(table) for name, table in prepared.image_sets.items()} | {
        "text_corpus": len(prepared.text_corpus)
    }
    log.info("wrote %s (%s)", paths.PREPARED, sizes)


main = stage_main("prepare", run, uses_torch=False)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
