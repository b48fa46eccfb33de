"""image_encoder hooks (coco): a pretrained image backbone (synth2.models.image_backbone), snapshotted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.profiles import ImageEncoder

if TYPE_CHECKING:
    from synth2.params import Params


def make_image_encoder(params: Params) -> ImageEncoder:
    """`coco.image_encoder`'s backbone (CLIP-like transformers model or EfficientNet-Lite0) on `device` in
    its dtype, snapshotted as is."""
    from synth2.models.image_backbone import load_pretrained
    from synth2.models.vision import vision_class
    from synth2.pretrained import resolve_device, resolve_dtype

    p = params.coco.image_encoder
    if p.backbone == "transformers":
        vision_class(p.model_class, "coco.image_encoder.model_class")  # a typo fails before any download
    device = resolve_device(params.device)
    backbone = load_pretrained(p, device, resolve_dtype(p.dtype, device))
    metrics = {
        "model": p.model,
        "backbone": backbone.kind,
        "embed_dim": backbone.embed_dim,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
    }
    return ImageEncoder(backbone.save, metrics)
