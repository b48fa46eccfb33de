"""evaluate hooks (coco): CIDEr and BLEU-4 against the references (attribute accuracy needs the world)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.coco.champion import check_champion_metric

if TYPE_CHECKING:
    import pandas as pd

    from synth2.params import Params

TEST_COLUMNS = ("image_id", "file_name", "image_path", "seen", "references")
EXAMPLE_KEY = "file_name"  # the test-table column that names an image in example tables


def check_champion(params: Params, val: pd.DataFrame) -> None:
    """A champion metric of a subset with no validation image fails before any image is captioned."""
    check_champion_metric(params.tracking.champion_metric, val)


def score(predictions: list[str], table: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """Aggregates, and each image's CIDEr."""
    import pandas as pd

    from synth2.caption_metrics import scores_with_cider_per_id

    references = {i: list(r) for i, r in enumerate(table["references"])}
    scores, cider = scores_with_cider_per_id(dict(enumerate(predictions)), references)
    return scores, pd.DataFrame({"image_id": table["image_id"].to_numpy(), "cider": list(cider.values())})
