"""The Ray engine of `shard_pool`: Ray Core actors, one model each, loaded once.

Each of `compute.workers` actors (`compute.cpus_per_worker` CPUs, `compute.gpus_per_worker` GPUs) unpacks
the stage's inputs into a private directory, builds its model there, and then runs shards as they are
handed to it: a shard goes to whichever worker is free, so a slow worker takes fewer shards, while the
output depends on the shards only (synth2.compute.shards). Nothing is written until every shard is
back, and the stage writes its outputs itself, so a failure leaves no partial output.

Failures become one line naming the cluster or the worker: an address nobody answers at, more workers
than the cluster can place, a worker whose model fails to load, a worker that dies mid-stage (its pid
and node, and the shard it held), or an error raised inside a shard (a `Synth2Error` keeps its own
message, as in the stage's process).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from synth2.compute import ray_cluster
from synth2.compute.shards import Shard, ShardFn, ShardPool, ShardWork, call_shard
from synth2.errors import Synth2Error

if TYPE_CHECKING:
    from synth2.params import ComputeParams

log = logging.getLogger("synth2")


class RayWorkerError(Synth2Error):
    """A Ray worker failed to start, died, or lost its cluster."""


class ShardWorker:
    """One Ray actor: a private copy of the stage's inputs, the model built once, shards on demand.

    Failures while building the model are kept and reported by `where()`, so the stage can name the
    worker and keep a `Synth2Error`'s own message (e.g. which stage to run first)."""

    def __init__(self, make: Callable[[], Any], inputs: list, threads: int) -> None:
        import ray

        self.directory = None
        self.failure: tuple[bool, str] | None = None
        try:
            self.directory = ray_cluster.unpack_inputs(ray.get(inputs[0]))
            # The model loaders read the stage's relative paths (synth2.paths), as in the stage's process.
            os.chdir(self.directory)
            import torch

            # The stage's own thread count (synth2.stage.seed_everything), so a shard computes here the
            # numbers it computes in the stage's process.
            torch.set_num_threads(threads)
            self.model = make()
        except Exception as exc:
            self.failure = (isinstance(exc, Synth2Error), ray_cluster.first_line(exc))

    def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "failure": self.failure}

    def run(self, fn: ShardFn, rows: Any, seed: int | None) -> Any:
        return call_shard(fn, self.model, rows, seed)

    def query(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.model)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


class RayPool(ShardPool):
    def __init__(self, compute: ComputeParams, work: ShardWork, label: str) -> None:
        import ray

        super().__init__(compute.shards, label)
        self.compute, self.work = compute, work
        self.actors: list = []
        self.places: list[dict[str, Any]] = []
        self._model_here = None
        start = time.perf_counter()
        self.cluster = ray_cluster.connect(compute)
        self.ray_start_seconds = time.perf_counter() - start
        log.info("%s: Ray ready in %.1f s (%s)", label, self.ray_start_seconds, self.cluster)
        try:
            ray_cluster.check_resources(compute, self.cluster)
            if compute.shards < compute.workers:
                log.warning(
                    "%s: %d shard(s) for %d workers: some workers stay idle (raise compute.shards)",
                    label,
                    compute.shards,
                    compute.workers,
                )
            inputs = ray.put(ray_cluster.pack_inputs(work.inputs))
            worker_class = ray.remote(ShardWorker).options(
                num_cpus=compute.cpus_per_worker, num_gpus=compute.gpus_per_worker, max_restarts=0
            )
            threads = int(os.environ.get("SYNTH2_TORCH_THREADS", "1"))
            # The ref inside a list is not resolved by Ray on the way in: each worker fetches it itself.
            self.actors = [worker_class.remote(work.make, [inputs], threads) for _ in range(compute.workers)]
            self.places = [
                self._get(actor.where.remote(), f"starting worker {i + 1}") for i, actor in enumerate(self.actors)
            ]
            for i, place in enumerate(self.places):
                if place["failure"]:
                    is_ours, message = place["failure"]
                    if is_ours:
                        raise Synth2Error(message)
                    raise RayWorkerError(f"{label}: {self.worker_name(i)} could not load its model: {message}")
        except BaseException:
            self._stop()
            raise
        self.startup_seconds = time.perf_counter() - start
        log.info(
            "%s: %d Ray workers ready in %.1f s (Ray %.1f s, workers and models %.1f s)",
            label,
            len(self.actors),
            self.startup_seconds,
            self.ray_start_seconds,
            self.startup_seconds - self.ray_start_seconds,
        )

    def worker_name(self, index: int) -> str:
        place = self.places[index] if index < len(self.places) else {}
        where = f" (pid {place['pid']} on {place['node']})" if place else ""
        return f"Ray worker {index + 1} of {len(self.actors)}{where}"

    def _get(self, ref: Any, doing: str, worker: int | None = None) -> Any:
        """ray.get with every Ray failure turned into one line naming the worker or the cluster."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(ref)
        except RayTaskError as exc:  # raised inside the shard: a Synth2Error keeps its own message
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Synth2Error):
                raise Synth2Error(str(cause)) from None
            name = self.worker_name(worker) if worker is not None else "a Ray worker"
            detail = (
                f"{type(cause).__name__}: {ray_cluster.first_line(cause)}" if cause else ray_cluster.first_line(exc)
            )
            raise RayWorkerError(f"{self.label}: {doing} failed on {name}: {detail}; nothing was written") from None
        except RayActorError:
            name = self.worker_name(worker) if worker is not None else "a Ray worker"
            raise RayWorkerError(
                f"{self.label}: {name} died while {doing}; nothing was written. Re-run the stage; the worker's log "
                "on its node says why (out of memory is the usual cause: lower the stage's batch_size or give "
                "workers more memory)"
            ) from None
        except ray.exceptions.RayError as exc:
            raise RayWorkerError(
                f"{self.label}: lost {self.cluster} while {doing} ({type(exc).__name__}: "
                f"{ray_cluster.first_line(exc)}); nothing was written"
            ) from None

    def _run(self, fn: ShardFn, tasks: list[Shard]) -> Iterator[tuple[Shard, Any]]:
        """Hand shards to free workers; yield each shard's output as it comes back."""
        import ray

        pending, idle, running = deque(tasks), deque(range(len(self.actors))), {}
        while pending or running:
            while pending and idle:
                worker, shard = idle.popleft(), pending.popleft()
                running[self.actors[worker].run.remote(fn, shard.rows, shard.seed)] = (shard, worker)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            shard, worker = running.pop(ref)
            output = self._get(ref, f"running shard {shard.index + 1}/{self.shards}", worker)
            idle.append(worker)
            yield shard, output

    def query(self, fn: Callable[[Any], Any]) -> Any:
        return self._get(self.actors[0].query.remote(fn), "answering a query", 0)

    def model_here(self) -> Any:
        if self._model_here is None:
            self._model_here = self.work.make()
        return self._model_here

    def describe(self) -> str:
        return f"{self.shards} shard(s) on {len(self.actors)} Ray workers ({self.cluster})"

    def close(self, completed: bool = True) -> None:
        super().close(completed)
        self._stop()

    def _stop(self) -> None:
        """Remove the workers' input copies, stop them, and leave (or stop) Ray."""
        import ray

        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:  # a dead worker has nothing left to remove
                pass
            ray.kill(actor)
        self.actors = []
        ray.shutdown()
