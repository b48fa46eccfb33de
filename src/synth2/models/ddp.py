"""torch DDP for the one training loop (synth2.models.training): active only inside a torchrun launch.

synth2.compute.torchrun starts a training stage on `compute.train_processes` processes. In each of them:

* `start` joins the process group (gloo on the CPU, NCCL on GPUs) and wraps the model in
  `DistributedDataParallel`, which broadcasts rank 0's weights and averages gradients in backward.
* Batches: every process draws the same global batch from the model's seeded generator and keeps rows
  rank, rank + N, rank + 2N, ... (`rank_rows`). The run therefore sees the data a single process would
  draw, step by step; DDP's averaged gradient of the shares' mean losses is the gradient of the global
  batch's mean loss (exactly for per-row means over equal shares, up to float rounding; per-token means
  weight rows a little differently). BatchNorm statistics are per share (DDP broadcasts rank 0's
  running statistics); synchronising them would need SyncBatchNorm, which runs on GPUs only.
* `global_loss` averages the step's loss over the processes, so every rank logs, records and checks
  (non-finite: stop) the same number.
* `finish` checks that every rank ends with rank 0's parameters, bit for bit, logs their checksum, leaves
  the group and stops the followers (`FollowerDone`): rank 0 alone goes on to write the outputs.

Outside a launch every function returns its input unchanged, so one process trains exactly as it did
before DDP existed. One `train` call per stage run: after `finish` the followers are gone.
"""

from __future__ import annotations

import hashlib
import logging

import torch
import torch.distributed as dist
from torch import nn

from synth2.compute import torchrun
from synth2.errors import Synth2Error

log = logging.getLogger("synth2")

# Every DDP wrapper of this process, kept until it ends. A wrapper's Reducer holds gloo's process group,
# and freeing it joins gloo's threads, which can wait forever on a peer that has already left (seen: rank
# 0 of a 2-process prior hung in ~ProcessGroupGloo when the wrapper went out of scope after `finish`, its
# follower gone; the full test suite under load). Both ranks end with os._exit (synth2.stage), so a kept
# wrapper is never freed.
_WRAPPERS: list[nn.Module] = []


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def start(model: nn.Module, device: torch.device, batch_size: int, name: str) -> nn.Module:
    """The module to run forward passes through: the model itself, or its DDP wrapper under torchrun."""
    if not torchrun.launched():
        return model
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size < world:  # a process with no rows would train on an empty batch (a NaN loss)
        raise Synth2Error(
            f"{name}: a batch of {batch_size} cannot be shared by {world} processes; lower "
            "compute.train_processes or raise the stage's batch_size"
        )
    log.info("DDP: rank %d of %d (%s)", rank, world, dist.get_backend())
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    wrapper = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    _WRAPPERS.append(wrapper)
    return wrapper


def rank_rows(*tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """This process's share of a global batch (every world-size-th row from its rank); the batch itself
    when training on one process."""
    if active():
        rank, world = dist.get_rank(), dist.get_world_size()
        tensors = tuple(t[rank::world] for t in tensors)
    return tensors[0] if len(tensors) == 1 else tensors


def global_loss(loss: torch.Tensor) -> float:
    """The step's loss: this process's, or the mean over the processes (gloo has no AVG: sum, divide)."""
    if not active():
        return loss.item()
    total = loss.detach().float().reshape(1).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item() / dist.get_world_size()


def parameter_checksum(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) of every parameter's bytes, in `model.parameters()` order."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def finish(model: nn.Module, name: str) -> None:
    """Check that all ranks hold rank 0's parameters, leave the group, stop the followers."""
    if not active():
        return
    rank, world = dist.get_rank(), dist.get_world_size()
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()]).to(comm)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    agree = torch.tensor([int(torch.equal(flat, reference))], device=comm)
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    checksum = parameter_checksum(model)
    dist.destroy_process_group()
    if not agree.item():
        raise Synth2Error(
            f"{name}: after DDP training the {world} processes hold different parameters; nothing was saved. "
            "Re-run; if it recurs, train on one process (compute.train_processes: 1)"
        )
    log.info("%s: parameters sha256 %s at the end, equal on all %d ranks", name, checksum, world)
    if rank != 0:
        raise torchrun.FollowerDone
