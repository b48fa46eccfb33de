"""A pretrained transformers vision encoder (CLIPVisionModelWithProjection or any class with its interface)
and its image processor as an ImageBackbone (synth2.models.image_backbone): PIL images -> `image_embeds`;
and `open_rgb`, how every coco stage opens an image file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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


class TransformersVision:
    """An ImageBackbone (synth2.models.image_backbone): a transformers model whose output has `image_embeds`."""

    kind = "transformers"

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.device, self.dtype = model.device, model.dtype
        self.embed_dim = model.config.projection_dim

    @classmethod
    def load(cls, model_dir: Path, model_class: str, processor_dir: Path, device: torch.device, dtype: torch.dtype,
             param: str = "coco.image_encoder.model", source: str | None = None) -> TransformersVision:
        """The model in eval mode on `device`, with its image processor."""
        from transformers import AutoImageProcessor

        model_class_ = vision_class(model_class, "coco.image_encoder.model_class")
        with quiet_loading():
            model = load_or_explain(param, source or str(model_dir), model_class,
                                    lambda: model_class_.from_pretrained(model_dir, dtype=dtype))
            processor = load_or_explain(param, str(processor_dir), "an image processor",
                                        lambda: AutoImageProcessor.from_pretrained(processor_dir))
        return cls(model.to(device).eval(), processor)

    @classmethod
    def load_saved(cls, directory: Path, device: torch.device, dtype: torch.dtype) -> TransformersVision:
        """A snapshot written by `save`: its class comes from its own config."""
        config = json.loads((directory / "config.json").read_text())
        architecture = (config.get("architectures") or ["CLIPVisionModelWithProjection"])[0]
        return cls.load(directory, architecture, directory, device, dtype, param=str(directory))

    def save(self, directory: Path) -> None:
        with atomic_path(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)

    def preprocess(self, images: Sequence) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        embeds = getattr(self.model(pixel_values=pixels), "image_embeds", None)
        if embeds is None:
            raise Synth2Error(f"coco.image_encoder.model_class: {type(self.model).__name__} returns no image_embeds; "
                              "use CLIPVisionModelWithProjection or a class with its interface")
        return embeds


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
