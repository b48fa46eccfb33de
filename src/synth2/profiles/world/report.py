"""report hooks (world): the columns of the results table, a one-line description of the data and the
colour x shape heatmaps of the run (synth2.world.heatmap)."""

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


def figures(params: Params) -> dict[str, bytes]:
    """The page's profile figures (heading -> PNG): what the synthetic pairs fix, per colour-shape cell."""
    from synth2 import paths
    from synth2.io import read_parquet
    from synth2.pipeline import VARIANT_NAMES
    from synth2.world.heatmap import colour_shape_accuracy, heatmap_png

    per_image = read_parquet(paths.EVAL_PER_IMAGE)
    grids = colour_shape_accuracy(per_image, VARIANT_NAMES)
    title = f"colour+shape accuracy per combination, seed {params.seed}"
    return {"What the synthetic pairs fix: colour × shape accuracy (test)": heatmap_png({"": grids}, title)}
