"""report hooks (coco): the columns of the results table and a one-line description of the data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth2.params import Params

RESULT_COLUMNS = (("cider", "CIDEr"), ("bleu4", "BLEU-4"))


def data_description(params: Params) -> str:
    p = params.coco.prepare
    cap = f", at most {p.max_train_images} training images" if p.max_train_images else ""
    return f"COCO-format data from {p.annotations}{cap}"


def figures(params: Params) -> dict[str, bytes]:
    """No profile figures: COCO has no attribute grid."""
    return {}
