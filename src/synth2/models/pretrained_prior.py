"""A pretrained diffusers prior pipeline (e.g. `KandinskyV22PriorPipeline`) as the text -> image-embedding prior.

The pipeline brings its own CLIP text encoder, tokenizer, `PriorTransformer` and scheduler; calling it
with captions returns `image_embeds` in the CLIP image space it was trained on. That is the coco
profile's `prior.kind: pipeline`: convenient, but the prior has seen far more than the human pairs, so
it is not the paper's fair setting (`prior.kind: trained`, synth2.models.prior).

Sampling draws all initial latents up front from one seeded CPU generator, so a caption's starting
noise does not depend on the batch it lands in; the scheduler's per-step noise comes from a generator
seeded per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from synth2.errors import Synth2Error
from synth2.io import atomic_path
from synth2.pretrained import load_or_explain, quiet_loading


def load_prior_pipeline(directory: Path, param: str, source: str, device: torch.device, dtype: torch.dtype):
    """The pipeline saved in `directory`, on `device` in `dtype`, checked to be a prior (it has a `prior`)."""
    from diffusers import DiffusionPipeline

    with quiet_loading():
        pipeline = load_or_explain(param, source, "a diffusers pipeline",
                                   lambda: DiffusionPipeline.from_pretrained(directory, torch_dtype=dtype))
    if not hasattr(pipeline, "prior") or not hasattr(pipeline.prior, "config"):
        raise Synth2Error(f"{param}: '{source}' is a {type(pipeline).__name__}, not a prior pipeline with a "
                          "`prior` (e.g. KandinskyV22PriorPipeline)")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def embedding_dim(pipeline) -> int:
    return int(pipeline.prior.config.embedding_dim)


def save_prior_pipeline(pipeline, directory: Path | str) -> None:
    with atomic_path(directory) as tmp:
        pipeline.save_pretrained(tmp)


@torch.inference_mode()
def sample_prior_pipeline(
    pipeline,
    captions: Sequence[str],
    num_inference_steps: int,
    guidance_scale: float,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Image embeddings [N, D] float32 for the captions."""
    dim = embedding_dim(pipeline)
    noise = torch.randn((len(captions), dim), generator=torch.Generator().manual_seed(seed))
    device = pipeline.device
    out = []
    for start in range(0, len(captions), batch_size):
        batch = list(captions[start : start + batch_size])
        result = pipeline(
            prompt=batch,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            latents=noise[start : start + len(batch)].to(device, pipeline.prior.dtype),
            generator=torch.Generator(device=device).manual_seed(seed + start),
            output_type="pt",
        )
        out.append(result.image_embeds.float().cpu())
    if not out:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(out).numpy()
