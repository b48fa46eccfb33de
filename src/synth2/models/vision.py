"""A pretrained vision encoder (CLIPVisionModelWithProjection or any class with its interface) and its
image processor: PIL images -> `image_embeds`, in batches. The coco profile's image encoder, used by the
image_encoder stage (snapshotted), by embed_images on the real images and by synthesize to re-encode
decoded pixels."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from synth2.errors import Synth2Error
from synth2.io import atomic_path
from synth2.pretrained import load_or_explain, quiet_loading


def vision_class(name: str, param: str):
    import transformers

    model_class = getattr(transformers, name, None)
    if model_class is None or not hasattr(model_class, "from_pretrained"):
        raise Synth2Error(f"{param}: transformers has no model class '{name}'")
    return model_class


def load_vision_model(model_dir: Path, model_class: str, processor_dir: Path, device: torch.device, dtype: torch.dtype,
                      param: str = "image_encoder.model", source: str | None = None):
    """(model in eval mode on `device`, image processor)."""
    from transformers import AutoImageProcessor

    cls = vision_class(model_class, "image_encoder.model_class")
    with quiet_loading():
        model = load_or_explain(param, source or str(model_dir), model_class, lambda: cls.from_pretrained(model_dir, dtype=dtype))
        processor = load_or_explain(param, str(processor_dir), "an image processor",
                                    lambda: AutoImageProcessor.from_pretrained(processor_dir))
    return model.to(device).eval(), processor


def load_saved_vision_model(directory: Path, device: torch.device, dtype: torch.dtype):
    """A snapshot written by `save_vision_model`: its class comes from its own config."""
    architectures = json.loads((directory / "config.json").read_text()).get("architectures") or ["CLIPVisionModelWithProjection"]
    return load_vision_model(directory, architectures[0], directory, device, dtype, param=str(directory))


def save_vision_model(model, processor, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)


@torch.inference_mode()
def embed_images(model, processor, images: Sequence, batch_size: int) -> np.ndarray:
    """float32 [N, D]: the model's `image_embeds` of each PIL image."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = [image.convert("RGB") for image in images[start : start + batch_size]]
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
        embeds = getattr(model(pixel_values=pixels), "image_embeds", None)
        if embeds is None:
            raise Synth2Error(f"image_encoder.model_class: {type(model).__name__} returns no image_embeds; "
                              "use CLIPVisionModelWithProjection or a class with its interface")
        out.append(embeds.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def open_rgb(path: Path | str):
    """An image file decoded to RGB; a file that no longer reads is one line naming it.

    prepare decoded every image it kept, so a failure here means the file changed after prepare ran
    (DVC does not watch the image folder).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise Synth2Error(
            f"cannot read image '{path}' ({type(exc).__name__}: {exc}); it read when prepare ran, so it changed "
            "since: restore it, or run `dvc repro -f prepare` to check the image folder again"
        ) from None


def embed_files(model, processor, files: Iterable[Path], batch_size: int) -> np.ndarray:
    """Like `embed_images`, opening only one batch of files at a time."""
    files = list(files)
    out = []
    for start in range(0, len(files), batch_size):
        images = [open_rgb(path) for path in files[start : start + batch_size]]
        out.append(embed_images(model, processor, images, batch_size))
    return np.concatenate(out) if out else embed_images(model, processor, [], batch_size)
