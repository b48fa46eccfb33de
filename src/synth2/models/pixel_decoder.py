"""A small conditional diffusion decoder: image embedding -> pixels, the pixel path's text-to-image half.

The paper's pixel path runs a text-to-image diffusion model; its embedding path stops at the prior. To
time that difference honestly the world needs a decoder whose cost is a diffusion model's, not the
autoencoder's one-pass decoder: a diffusers `UNet2DModel` (plain down/up blocks, no attention) denoising
32-px images, conditioned on the image embedding through its class embedding (`class_embed_type=
"identity"`, the embedding mapped by a linear layer to the UNet's time-embedding width). Trained with
DDPM noise prediction on the unlabelled pool's (image, image-encoder embedding) pairs; sampled with DDIM
(eta 0) in a few steps. Cost grows with steps x UNet size x images: it is what the speed ratio measures.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file
from torch import nn

from synth2.io import atomic_path
from synth2.models.autoencoder import to_float_images, to_uint8_pixels
from synth2.models.training import TrainConfig, train

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class PixelDecoderConfig:
    image_size: int
    embed_dim: int
    channels: tuple[int, ...] = (32, 64, 64)  # UNet block widths; the last block does not downsample
    layers_per_block: int = 1
    num_train_timesteps: int = 1000

    @property
    def time_embed_dim(self) -> int:
        return self.channels[0] * 4  # UNet2DModel's own choice; the identity class embedding must match it


class PixelDecoder(nn.Module):
    """UNet2DModel + the linear map of standardised image embeddings onto its class embedding."""

    def __init__(self, config: PixelDecoderConfig) -> None:
        super().__init__()
        self.config = config
        n = len(config.channels)
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=3,
            out_channels=3,
            block_out_channels=config.channels,
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=min(32, math.gcd(*config.channels)),
            class_embed_type="identity",
        )
        self.condition = nn.Linear(config.embed_dim, config.time_embed_dim)
        # Statistics of the training embeddings (buffers: saved, never trained).
        self.register_buffer("embed_mean", torch.zeros(config.embed_dim))
        self.register_buffer("embed_std", torch.ones(config.embed_dim))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        condition = self.condition((embeddings - self.embed_mean) / self.embed_std)
        return self.unet(noisy, timesteps, class_labels=condition).sample


def build_scheduler(config: PixelDecoderConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, prediction_type="epsilon")


def training_config(steps: int, batch_size: int, lr: float) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=1.0, log_every=100)


def _embeddings_tensor(embeddings: np.ndarray, dim: int) -> torch.Tensor:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected embeddings [N, {dim}], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array))


def train_pixel_decoder(
    pixels_uint8: np.ndarray, embeddings: np.ndarray, config: PixelDecoderConfig, training: TrainConfig, seed: int
) -> tuple[PixelDecoder, list[float]]:
    """DDPM noise prediction on (pixels [N, H, W, 3] uint8, their embeddings [N, D]); the model in eval mode
    and every step's loss (MSE of the predicted noise: 1.0 is "predicts nothing")."""
    if len(pixels_uint8) != len(embeddings) or len(pixels_uint8) < 2:
        raise ValueError(f"need equally many images and embeddings (>= 2), got {len(pixels_uint8)} and {len(embeddings)}")
    if pixels_uint8.shape[1] != config.image_size:
        raise ValueError(f"config.image_size {config.image_size} != pixel size {pixels_uint8.shape[1]}")
    emb = _embeddings_tensor(embeddings, config.embed_dim)
    torch.manual_seed(seed)  # weight init
    model = PixelDecoder(config)
    model.embed_mean.copy_(emb.mean(0))
    model.embed_std.copy_(emb.std(0).clamp_min(1e-6))
    scheduler = build_scheduler(config)
    generator = torch.Generator().manual_seed(seed)  # batches, timesteps and noise
    pool = torch.from_numpy(np.array(pixels_uint8))

    def batch_loss(step: int, net: nn.Module) -> torch.Tensor:
        idx = torch.randint(len(pool), (training.batch_size,), generator=generator)
        x0 = to_float_images(pool[idx]) * 2.0 - 1.0  # the UNet works in [-1, 1]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(config.num_train_timesteps, (len(idx),), generator=generator)
        return F.mse_loss(net(scheduler.add_noise(x0, noise, t), t, emb[idx]), noise)

    return model, train(model, batch_loss, training, "pixel decoder")


@torch.no_grad()
def decode_pixels(
    model: PixelDecoder, embeddings: np.ndarray, num_inference_steps: int, batch_size: int = 256, seed: int = 0
) -> np.ndarray:
    """Image embeddings [N, D] -> uint8 pixels [N, H, W, 3] by DDIM (eta 0). All noise is drawn up front
    from one seeded generator: the same seed and batch size give the same images."""
    config = model.config
    emb = _embeddings_tensor(embeddings, config.embed_dim)
    sampler = DDIMScheduler.from_config(build_scheduler(config).config)
    sampler.set_timesteps(num_inference_steps)
    size = config.image_size
    noise = torch.randn((len(emb), 3, size, size), generator=torch.Generator().manual_seed(seed))
    model.eval()
    out = []
    for start in range(0, len(emb), batch_size):
        cond, images = emb[start : start + batch_size], noise[start : start + batch_size]
        for t in sampler.timesteps:
            timesteps = torch.full((len(images),), int(t), dtype=torch.long)
            images = sampler.step(model(images, timesteps, cond), t, images, eta=0.0).prev_sample
        out.append(to_uint8_pixels((images + 1.0) / 2.0))
    if not out:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.concatenate(out)


def parameter_count(model: PixelDecoder) -> int:
    return sum(p.numel() for p in model.parameters())


def save_pixel_decoder(model: PixelDecoder, directory: Path | str) -> None:
    """`model.safetensors` + `config.json` in `directory`, replaced atomically."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2) + "\n")


def load_pixel_decoder(directory: Path | str) -> PixelDecoder:
    """Inverse of `save_pixel_decoder`; safetensors only, nothing is unpickled."""
    directory = Path(directory)
    raw = json.loads((directory / CONFIG_FILE).read_text())
    model = PixelDecoder(PixelDecoderConfig(**{**raw, "channels": tuple(raw["channels"])}))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()
