"""prepare hooks (world): sample the shapes world (synth2.world.datasets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.profiles import PreparedData
from synth2.world.datasets import build_world

if TYPE_CHECKING:
    from synth2.params import Params


def prepare(params: Params) -> PreparedData:
    """Each image set's table and its pixels, row for row (world.pixels is indexed by image id)."""
    world = build_world(params.world.prepare, params.seed)
    image_sets = {"unlabeled_pool": world.pool, "real_train": world.real_train, "val": world.val, "test": world.test}
    pixels = {name: world.pixels[table["image_id"].to_numpy()] for name, table in image_sets.items()}
    return PreparedData(image_sets, pixels, world.text_corpus, world.concepts, world.summary())
