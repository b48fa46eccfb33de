"""How a stage's rows are split into shards, and the seed of each shard.

The split, not the engine, decides a sharded stage's output: shard i of N always holds the same rows
and draws from the same seed, whether it runs in the stage's own process (`compute.engine: local`) or on
any Ray worker, and shard outputs are put back together in shard order. So `compute.shards` is a DVC
param of the sharded stages, while `compute.engine` and the worker count are not: moving the same shards
to a cluster re-runs nothing.

Seeds: with one shard the shard's seed is the stage's seed itself, so `shards: 1` reproduces the
unsharded stage bit for bit (the seed studies rely on it). With more, shard i's seed comes from numpy's
SeedSequence(seed) child i (`spawn_key=(i,)`), not from `seed + i`: the captions stage samples its
unprompted set with seed + 1, and `seed + i` would hand shard 1 of the prompted set the very stream of
shard 0 of the unprompted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def shard_bounds(n_rows: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard: contiguous, in row order, sizes differing by at most one."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    base, extra = divmod(n_rows, shards)
    bounds, start = [], 0
    for index in range(shards):
        stop = start + base + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard_seed(seed: int, index: int, shards: int) -> int:
    """The seed shard `index` of `shards` samples with: `seed` itself when there is one shard."""
    if shards == 1:
        return seed
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])


def concatenate(parts: Sequence[Any]) -> Any:
    """Shard outputs back in one piece, in shard order: arrays stacked by rows, lists joined. One part is
    returned as it is, so a single shard hands back exactly what the unsharded call returned."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [item for part in parts for item in part]
