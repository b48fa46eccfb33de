"""Run a stage's inference shard by shard: in the stage's own process, or on Ray actors.

    work = ShardWork(make=partial(profile.caption_generator, params), inputs=(paths.CAPTION_LM,))
    with shard_pool(params.compute, work, "captions") as pool:
        captions = pool.map(sample, prompts, seed)       # sample(generator, shard_prompts, shard_seed)

`work.make()` builds a worker's model, once per worker: in the stage's process for `compute.engine:
local`, in every Ray actor for `ray` (so it must pickle: a module-level function or a partial of one).
`work.inputs` are the project files `make` reads, which Ray workers on other machines receive through
Ray's object store. `pool.map(fn, rows, seed)` splits the rows into `compute.shards` contiguous shards,
calls `fn(model, shard_rows, shard_seed)` (`fn(model, shard_rows)` when seed is None) for each, and
returns the shard outputs joined in shard order, whatever order the shards finished in. With one shard
that is exactly one call `fn(model, rows, seed)`: the stage as it was before sharding existed.

Progress is logged as rows done / total after every shard; start-up (Ray, workers, model loading) and
work time are logged when the pool closes and go to MLflow, never into a DVC-tracked file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth2 import tracking
from synth2.compute.shards import concatenate, shard_bounds, shard_seed

if TYPE_CHECKING:
    from synth2.params import ComputeParams

log = logging.getLogger("synth2")

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
        """A pool that completed logs and records its start-up and work time (Ray's also stops its workers)."""
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
        tracking.log_metrics(
            {"compute": {f"{self.label}_startup_s": self.startup_seconds, f"{self.label}_work_s": self.work_seconds}}
        )

    def describe(self) -> str:
        return f"{self.shards} shard(s) in this process"


class LocalPool(ShardPool):
    """Every shard in the stage's own process, one after another, on one model."""

    def __init__(self, work: ShardWork, shards: int, label: str) -> None:
        super().__init__(shards, label)
        start = time.perf_counter()
        self.model = work.make()
        self.startup_seconds = time.perf_counter() - start

    def _run(self, fn: ShardFn, tasks: list[Shard]) -> Iterator[tuple[Shard, Any]]:
        for shard in tasks:
            yield shard, call_shard(fn, self.model, shard.rows, shard.seed)

    def query(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.model)

    def model_here(self) -> Any:
        return self.model


def call_shard(fn: ShardFn, model: Any, rows: Any, seed: int | None) -> Any:
    return fn(model, rows) if seed is None else fn(model, rows, seed)


@contextlib.contextmanager
def shard_pool(compute: ComputeParams, work: ShardWork, label: str) -> Iterator[ShardPool]:
    """A pool of the engine `compute.engine` names, closed (Ray workers stopped) when the block ends."""
    if compute.engine == "ray":
        from synth2.compute.ray_pool import RayPool

        pool: ShardPool = RayPool(compute, work, label)
    else:
        pool = LocalPool(work, compute.shards, label)
    try:
        yield pool
    except BaseException:
        pool.close(completed=False)
        raise
    pool.close()
