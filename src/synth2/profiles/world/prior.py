"""prior hooks (world): the prior is always trained on the human pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth2.params import Params
    from synth2.profiles import PriorPipeline


def prior_pipeline(params: Params) -> PriorPipeline | None:
    """None: a pretrained prior speaks CLIP, not the world's encoder."""
    return None
