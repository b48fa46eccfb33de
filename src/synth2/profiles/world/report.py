"""report hooks (world): the columns of the results table and a one-line description of the data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth2.params import Params

RESULT_COLUMNS = (
    ("attr_colour_shape", "colour+shape"),
    ("attr_all", "all attributes"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
)


def data_description(params: Params) -> str:
    w = params.world.prepare
    return (
        f"{w.real_train_size} real pairs (Zipf a={w.zipf_a}, {w.holdout_fraction:.0%} of colour-shape "
        f"combinations held out); test: {w.test_per_combo} images per combination"
    )
