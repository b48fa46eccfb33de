"""The one training loop every model uses: AdamW, linear warm-up then cosine decay, gradient clipping,
optional mixed precision on a GPU, one loss per step, and a clear stop on a non-finite loss.

A model brings only its batch-and-loss function, `batch_loss(step, net) -> loss`, which draws its own
batch from its own seeded generator, so the loop itself consumes no randomness (nanoGPT's loop, with
the model-specific parts passed in). `net` is what the forward pass runs through: the model itself, or,
when the stage trains on several processes (`compute.train_processes`), its DDP wrapper; the batch
function then keeps its process's rows of the batch (`synth2.models.ddp.rank_rows`). On one process both
are the identity, so training is exactly what it was before DDP. Optimiser settings that differ between models (betas, weight
decay, clipping) are fields of `TrainConfig`, so every model trains exactly as it did with its own loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synth2.errors import Synth2Error
from synth2.models import ddp

log = logging.getLogger("synth2")

CURVE_POINTS = 50  # points of a loss curve in plots/ (window means)


class TrainingDiverged(Synth2Error):
    """The loss became NaN or infinite: the model would be garbage, so nothing is saved."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int  # read by the model's batch_loss, which draws the batches
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    warmup: int = 100  # steps of linear warm-up, at most a tenth of the run
    min_lr_ratio: float = 0.1  # the cosine decays to this fraction of lr
    log_every: int = 100


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to `min_ratio` (nanoGPT).

    Decay buys a lower final loss for free; warm-up keeps AdamW's first, badly estimated steps small.
    """
    warmup = min(warmup, max(1, total // 10))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    model: nn.Module,
    batch_loss: Callable[[int, nn.Module], torch.Tensor],
    config: TrainConfig,
    name: str,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype = torch.float32,
) -> list[float]:
    """Train the model's trainable parameters for `config.steps` steps; return the loss of every step.

    The model is in train mode during the loop and in eval mode afterwards. On a GPU a half
    `autocast_dtype` runs `batch_loss` in mixed precision (fp16 with a gradient scaler); weights and
    optimiser state stay fp32. A NaN or infinite loss raises `TrainingDiverged` at once. Under torchrun
    the model trains with torch DDP (synth2.models.ddp) and only rank 0 returns: the other ranks stop
    when training ends.
    """
    device = torch.device(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.steps, config.warmup, config.min_lr_ratio)
    )
    mixed = device.type == "cuda" and autocast_dtype != torch.float32
    scaler = torch.amp.GradScaler("cuda", enabled=mixed and autocast_dtype == torch.float16)
    log.info("%s: %.2fM trainable parameters, %d steps", name, sum(p.numel() for p in trainable) / 1e6, config.steps)
    net = ddp.start(model, device, config.batch_size, name)

    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=mixed):
            loss = batch_loss(step, net)
        value = ddp.global_loss(loss)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{name}: the loss became {value} at step {step + 1} of {config.steps}; nothing was saved "
                "(the previous model is kept). Lower the learning rate or check the inputs for NaN/inf"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        losses.append(value)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            recent = losses[-config.log_every :]
            log.info(
                "%s step %d/%d loss %.4f (%.1f s)",
                name,
                step + 1,
                config.steps,
                sum(recent) / len(recent),
                time.perf_counter() - start,
            )
    model.eval()
    ddp.finish(model, name)
    return losses


def loss_curve(losses: list[float], points: int = CURVE_POINTS) -> list[tuple[int, float]]:
    """(last step of the window, mean loss over the window), about `points` windows: the plots/ curve."""
    window = max(1, len(losses) // points)
    return [
        (min(i + window, len(losses)), float(np.mean(losses[i : i + window]))) for i in range(0, len(losses), window)
    ]


def loss_summary(losses: list[float]) -> dict[str, float]:
    """First loss and the mean over the last tenth of the run: what metrics/*.json report."""
    return {"first_loss": float(losses[0]), "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :]))}
