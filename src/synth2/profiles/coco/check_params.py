"""check_params hooks (coco): a caption LLM is named, the champion metric is one coco can score, and the
image encoder's keys fit its backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.coco.champion import check_champion_metric
from synth2.params import ParamsError

if TYPE_CHECKING:
    from synth2.params import Params


def check_params(params: Params) -> None:
    """params.yaml ships coco.caption_lm.pretrained empty: there is no sensible default."""
    if not params.coco.caption_lm.pretrained:
        raise ParamsError(
            "coco.caption_lm.pretrained is not set: the coco profile needs a caption LLM "
            "(a local model directory or a Hugging Face hub id, e.g. Qwen/Qwen2.5-1.5B-Instruct)"
        )
    check_champion_metric(params.tracking.champion_metric, None)
    encoder = params.coco.image_encoder
    if encoder.backbone != "transformers" and encoder.image_processor:
        raise ParamsError(
            f"coco.image_encoder.image_processor: '{encoder.image_processor}' is only read by the transformers "
            f"backbone; {encoder.backbone} preprocesses by itself: set it to null"
        )
