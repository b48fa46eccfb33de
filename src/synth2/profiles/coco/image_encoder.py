"""image_encoder hooks (coco): a pretrained vision model with CLIPVisionModelWithProjection's interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synth2.profiles import ImageEncoder

if TYPE_CHECKING:
    from synth2.params import Params


def make_image_encoder(params: Params) -> ImageEncoder:
    """`coco.image_encoder.model` (and its image processor) on `device` in its dtype, snapshotted as is."""
    from synth2.models.vision import load_vision_model, save_vision_model, vision_class
    from synth2.pretrained import resolve_device, resolve_dtype, resolve_source

    p = params.coco.image_encoder
    vision_class(p.model_class, "coco.image_encoder.model_class")  # a typo fails before any download
    device = resolve_device(params.device)
    model_dir = resolve_source(p.model, "coco.image_encoder.model")
    processor_dir = (
        resolve_source(p.image_processor, "coco.image_encoder.image_processor") if p.image_processor else model_dir
    )
    dtype = resolve_dtype(p.dtype, device)
    model, processor = load_vision_model(model_dir, p.model_class, processor_dir, device, dtype, source=p.model)
    metrics = {"model": p.model, "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
    return ImageEncoder(lambda directory: save_vision_model(model, processor, directory), metrics)
