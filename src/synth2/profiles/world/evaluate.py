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
    means): the world parser reads each caption back into attributes (synth2.world.accuracy)."""
    import pandas as pd

    from synth2.caption_metrics import scores_with_cider_per_id
    from synth2.world.accuracy import attribute_hits

    references = {i: list(r) for i, r in enumerate(table["references"])}
    scores, cider = scores_with_cider_per_id(dict(enumerate(predictions)), references)
    hits = attribute_hits(predictions, table)
    per_image = pd.DataFrame({"image_id": table["image_id"].to_numpy(), "cider": list(cider.values())})
    per_image = pd.concat([per_image, hits.add_prefix("attr_").astype(float)], axis=1)
    return scores | {f"attr_{name}": float(hits[name].mean()) for name in hits.columns}, per_image
