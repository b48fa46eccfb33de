"""balance hooks (coco): the class a caption was prompted with, or the first class it names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2 import paths
from synth2.coco.concepts import mention_labeller, prompt_labeller
from synth2.io import read_parquet
from synth2.profiles import CaptionLabellers

if TYPE_CHECKING:
    from synth2.params import Params


def caption_labellers(params: Params) -> CaptionLabellers:
    """Prompted captions: the class they were prompted with (kept only when they name it, unless
    `coco.balance.require_concept_mention` is off); unprompted ones: the first class they name."""
    concepts = read_parquet(paths.CONCEPTS, columns=["concept"])["concept"].tolist()
    hint = (
        "no caption names the concept it was prompted with; check captions.prompt_template and the LLM, "
        "or set coco.balance.require_concept_mention: false"
    )
    prompted = prompt_labeller(params.coco.balance.require_concept_mention)
    return CaptionLabellers(prompted, mention_labeller(concepts), concepts=concepts, unlabelled_hint=hint)
