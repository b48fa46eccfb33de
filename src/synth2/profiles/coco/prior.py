"""prior hooks (coco): the trained PriorTransformer, or a pretrained diffusers prior pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.profiles import PriorPipeline

if TYPE_CHECKING:
    from synth2.params import Params


def prior_pipeline(params: Params) -> PriorPipeline | None:
    """With `coco.prior.kind: pipeline`, the pipeline it names; its embeddings must live in the image
    encoder's space."""
    p = params.coco.prior
    if p.kind != "pipeline":
        return None
    return PriorPipeline(source=p.pipeline, param="coco.prior.pipeline", guidance_scale=p.guidance_scale, dtype=p.dtype)
