"""Run a stage's inference shard by shard: in the stage's own process, or on Ray actors.

    work = ShardWork(make=partial(profile.caption_generator, params), inputs=(paths.CAPTION_LM,))
    with shard_pool(params.compute, work, "captions") as pool:
        captions = pool.map(sample, prompts, seed)       # sample(generator, shard_prompts, shard_seed)
    tracking.log_metrics({"compute": pool.timings})

`work.make()` builds a worker's model, once per worker: in the stage's process for `compute.engine:
local`, in every Ray actor for `ray` (so it must pickle: a module-level function or a partial of one).
`work.inputs` are the project files `make` reads, which Ray workers on other machines receive through
Ray's object store. `pool.map(fn, rows, seed)` splits the rows into `compute.shards` contiguous shards,
calls `fn(model, shard_rows, shard_seed)` (`fn(model, shard_rows)` when seed is None) for each, and
returns the shard outputs joined in shard order, whatever order the shards finished in. With one shard
that is exactly one call `fn(model, rows, seed)`: the stage as it was before sharding existed.

Progress is logged as rows done / total after every shard; start-up (Ray, workers, model loading) and
work time are logged when the pool closes, and `pool.timings` hands them to the stage, which records
them in MLflow, never in a DVC-tracked file. What every engine shares (splitting, progress, reassembly:
`ShardPool`) lives in synth2.compute.shards; this module adds the local engine and picks the engine.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from synth2.compute.ray_pool import RayPool
from synth2.compute.shards import Shard, ShardFn, ShardPool, ShardWork, call_shard

if TYPE_CHECKING:
    from synth2.params import ComputeParams

__all__ = ["LocalPool", "Shard", "ShardFn", "ShardPool", "ShardWork", "call_shard", "shard_pool"]

log = logging.getLogger("synth2")


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


@contextlib.contextmanager
def shard_pool(compute: ComputeParams, work: ShardWork, label: str) -> Iterator[ShardPool]:
    """A pool of the engine `compute.engine` names, closed (Ray workers stopped) when the block ends."""
    if compute.engine == "ray":
        pool: ShardPool = RayPool(compute, work, label)
    else:
        pool = LocalPool(work, compute.shards, label)
    try:
        yield pool
    except BaseException:
        pool.close(completed=False)
        raise
    pool.close()
