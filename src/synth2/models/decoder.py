"""A pretrained diffusers decoder (e.g. `KandinskyV22Pipeline`): image embeddings -> pixels.

Only the pixel-space timing path of the coco profile uses it (prior -> decoder -> image encoder), to
measure what synthesising in embedding space saves, as the paper does; the VLM never sees its pixels.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from synth2.errors import Synth2Error
from synth2.pretrained import load_or_explain, quiet_loading


def load_decoder(directory: Path, source: str, device: torch.device, dtype: torch.dtype):
    """The pipeline in `directory` on `device`, checked to take `image_embeds` (and `negative_image_embeds`)."""
    from diffusers import DiffusionPipeline

    with quiet_loading():
        decoder = load_or_explain("synthesize.decoder", source, "a diffusers pipeline",
                                  lambda: DiffusionPipeline.from_pretrained(directory, torch_dtype=dtype))
    accepted = inspect.signature(decoder.__call__).parameters
    if not {"image_embeds", "negative_image_embeds"} <= set(accepted):
        raise Synth2Error(f"synthesize.decoder: '{source}' is a {type(decoder).__name__}, not a decoder taking "
                          "image_embeds (e.g. KandinskyV22Pipeline)")
    decoder.set_progress_bar_config(disable=True)
    return decoder.to(device)


def check_embedding_dim(decoder, dim: int, source: str) -> None:
    """A decoder conditions on one embedding size (Kandinsky 2.2: 1280, CLIP ViT-bigG-14's)."""
    expected = getattr(getattr(decoder, "unet", None), "config", {}).get("encoder_hid_dim")
    if expected is not None and expected != dim:
        raise Synth2Error(f"synthesize.decoder: '{source}' decodes {expected}-d image embeddings but the image encoder "
                          f"makes {dim}-d ones; use the vision model the decoder's prior was trained with")


@torch.inference_mode()
def decode_embeddings(
    decoder, embeddings: np.ndarray, negative: np.ndarray, size: int, steps: int, batch_size: int, seed: int
) -> list:
    """PIL images [N] of size x size for image embeddings [N, D]; `negative` [D] is the unconditional embedding."""
    device, dtype = decoder.device, decoder.unet.dtype
    images = []
    for start in range(0, len(embeddings), batch_size):
        batch = torch.as_tensor(embeddings[start : start + batch_size], device=device, dtype=dtype)
        images += decoder(
            image_embeds=batch,
            negative_image_embeds=torch.as_tensor(negative, device=device, dtype=dtype).expand_as(batch),
            height=size,
            width=size,
            num_inference_steps=steps,
            generator=torch.Generator(device=device).manual_seed(seed + start),
            output_type="pil",
        ).images
    return images
