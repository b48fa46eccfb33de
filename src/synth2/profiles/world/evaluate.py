"""evaluate hooks (world): CIDEr and BLEU-4 against the references, plus exact attribute accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from synth2.params import Params

TEST_COLUMNS = ("image_id", "colour", "shape", "size", "position", "combo", "seen", "references")
EXAMPLE_KEY = "combo"  # the test-table column that names an image in example tables


def check_champion(params: Params, val: pd.DataFrame) -> None:
    """Every subset has validation images in the world; an unknown champion metric is named when the
    champion is chosen, with the metrics available."""


def score(predictions: list[str], table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """Aggregates, and per image its CIDEr and whether each attribute is right (the aggregates are their
    means): the world parser reads each caption back into attributes (synth2.world.accuracy). Each image's
    colour, shape and seen flag ride along, for the colour x shape heatmaps (synth2.world.heatmap)."""
    import pandas as pd

    from synth2.caption_metrics import scores_with_cider_per_id
    from synth2.world.accuracy import attribute_hits

    references = {i: list(r) for i, r in enumerate(table["references"])}
    scores, cider = scores_with_cider_per_id(dict(enumerate(predictions)), references)
    hits = attribute_hits(predictions, table)
    per_image = table[["image_id", "colour", "shape", "seen"]].reset_index(drop=True)
    per_image["cider"] = list(cider.values())
    per_image = pd.concat([per_image, hits.add_prefix("attr_").astype(float)], axis=1)
    return scores | {f"attr_{name}": float(hits[name].mean()) for name in hits.columns}, per_image
