"""How a stage's rows are split into shards, the seed of each shard, and the pool every engine extends.

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

`ShardPool` is the part of a pool every engine shares: it splits the rows, logs progress and joins the
outputs; an engine (synth2.compute.pool's local one, synth2.compute.ray_pool's) only runs the shards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("synth2")


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


# fn(model, rows, seed) or, for a call without a seed, fn(model, rows).
ShardFn = Callable[..., Any]


@dataclass(frozen=True)
class ShardWork:
    """What every worker of a pool needs: how to build its model, and the project files that reads."""

    make: Callable[[], Any]
    inputs: tuple[Path, ...]


@dataclass(frozen=True)
class Shard:
    index: int
    rows: Any  # a slice of the rows (the rows themselves when there is one shard)
    seed: int | None


class ShardPool:
    """Splitting, progress and reassembly; the engine (`_run`) decides where each shard runs."""

    def __init__(self, shards: int, label: str) -> None:
        self.shards = shards
        self.label = label
        self.startup_seconds = 0.0
        self.work_seconds = 0.0
        self.rows_done = 0

    def map(self, fn: ShardFn, rows: Sequence[Any], seed: int | None = None) -> Any:
        tasks = self._split(rows, seed)
        total, done, outputs = len(rows), 0, {}
        start = time.perf_counter()
        for shard, output in self._run(fn, tasks):
            outputs[shard.index] = output
            done += len(shard.rows)
            log.info(
                "%s: %d/%d rows done (%d/%d shards, %.1f s)",
                self.label,
                done,
                total,
                len(outputs),
                len(tasks),
                time.perf_counter() - start,
            )
        self.work_seconds += time.perf_counter() - start
        self.rows_done += total
        return concatenate([outputs[shard.index] for shard in tasks])

    def _split(self, rows: Sequence[Any], seed: int | None) -> list[Shard]:
        bounds = shard_bounds(len(rows), self.shards)
        if len(bounds) == 1:
            return [Shard(0, rows, seed)]
        tasks = [
            Shard(i, rows[start:stop], None if seed is None else shard_seed(seed, i, self.shards))
            for i, (start, stop) in enumerate(bounds)
            if stop > start
        ]
        # No rows at all: one empty shard still runs, so the output has the type and width it always has.
        return tasks or [Shard(0, rows, None if seed is None else shard_seed(seed, 0, self.shards))]

    def _run(self, fn: ShardFn, tasks: list[Shard]) -> Iterator[tuple[Shard, Any]]:
        raise NotImplementedError

    def query(self, fn: Callable[[Any], Any]) -> Any:
        """fn(model) on one worker, e.g. to read what the model describes about itself."""
        raise NotImplementedError

    def model_here(self) -> Any:
        """A model in the stage's own process (the local engine's; built on first use for Ray), for work
        that must not be sharded, such as timings."""
        raise NotImplementedError

    def close(self, completed: bool = True) -> None:
        """A pool that completed logs its start-up and work time (Ray's also stops its workers)."""
        if not completed:
            return
        log.info(
            "%s: %d rows on %s: start-up %.2f s, work %.2f s",
            self.label,
            self.rows_done,
            self.describe(),
            self.startup_seconds,
            self.work_seconds,
        )

    @property
    def timings(self) -> dict[str, float]:
        """Start-up and work seconds, for the stage to record in MLflow (never in a DVC-tracked file)."""
        return {f"{self.label}_startup_s": self.startup_seconds, f"{self.label}_work_s": self.work_seconds}

    def describe(self) -> str:
        return f"{self.shards} shard(s) in this process"


def call_shard(fn: ShardFn, model: Any, rows: Any, seed: int | None) -> Any:
    return fn(model, rows) if seed is None else fn(model, rows, seed)
