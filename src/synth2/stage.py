"""The frame every DVC stage runs in: params, seeding, tracking, all-or-nothing outputs, one-line errors.

A stage module defines `run(params)` and `main = stage_main("name", run)`. The frame validates
params.yaml, seeds every RNG, records the stage's MLflow run (synth2.tracking), and runs the body inside
`synth2.io.all_or_nothing()`, so a stage that fails after writing some outputs leaves all of them as they
were. Failures follow synth2.errors' policy: a `Synth2Error` is one line and exit status 1; anything else
is one line naming the stage and the log file with the traceback (`SYNTH2_DEBUG=1` shows it).

A stage that never touches torch says so (`uses_torch=False`: prepare, the gates, the params check):
importing torch just to seed it costs about 1.5 s, a gate's whole budget. A stage that trains a model says
so (`trains=True`): with `compute.train_processes > 1` it relaunches itself on that many processes with
torchrun, after params are validated and before anything is read or written (synth2.compute.torchrun).
Rank 0 alone records and writes: the frame opens no tracking run on the other ranks and drops whatever
they wrote, so two processes never race on one output (synth2.io knows nothing of ranks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import numpy as np

from synth2 import tracking
from synth2.compute import torchrun
from synth2.errors import Synth2Error, terminate_as_interrupt, user_errors
from synth2.io import all_or_nothing
from synth2.params import Params, load_params

log = logging.getLogger("synth2")
THREADS_ENV = "SYNTH2_TORCH_THREADS"


def torch_threads() -> int:
    """One thread unless SYNTH2_TORCH_THREADS says otherwise. The world profile's models are tiny; on a
    busy 2-core machine two threads were measured 4-10x slower than one (spinning OpenMP threads)."""
    value = os.environ.get(THREADS_ENV, "1")
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise Synth2Error(f"{THREADS_ENV}={value!r}: give a positive number of torch threads (e.g. 1), or unset it")
    return threads


def seed_everything(seed: int, uses_torch: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if not uses_torch:
        return
    threads = torch_threads()  # checked before the import: a bad value fails in milliseconds
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def run_stage(
    name: str, body: Callable[[Params], None], uses_torch: bool = True, tracked: bool = True, trains: bool = False
) -> None:
    # Our own progress at INFO; libraries (GX, MLflow, DVC) only when they warn.
    rank = f" rank {torchrun.rank()}" if torchrun.launched() else ""
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {name}{rank} %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    terminate_as_interrupt()
    start = time.perf_counter()
    torch_preloaded = "torch" in sys.modules  # a stage forked from the warm server (synth2.stage_server)
    with user_errors(f"stage '{name}'"):
        params = load_params()
        if trains and torchrun.needs_launch(params.compute.train_processes):
            sys.exit(torchrun.launch(name, params.compute.train_processes))
        if torchrun.launched():
            torchrun.check_world(params.compute.train_processes)
            torchrun.enter_rank()
        follower = torchrun.is_follower()
        seed_everything(params.seed, uses_torch)
        try:
            # Tracking is recorded from inside the stage so that a bare `dvc repro` records too (rank 0's
            # alone: a follower opens no run, so its recording calls do nothing). The outputs land before
            # the run closes, so that it records them.
            with (
                tracking.stage_run(name, params) if tracked and not follower else contextlib.nullcontext(),
                all_or_nothing(),
            ):
                body_start = time.perf_counter()
                body(params)
                body_seconds = time.perf_counter() - body_start
                if follower:
                    # Training stops a follower (synth2.models.ddp.finish); one that got here trained
                    # nothing (a pretrained model in this profile) and wrote what rank 0 writes. Its
                    # writes are still waiting in all_or_nothing(): leaving the block this way drops them.
                    raise torchrun.FollowerDone
        except torchrun.FollowerDone:
            log.info("done in %.1f s; rank 0 writes the outputs", time.perf_counter() - start)
            leave_as_follower()
    if not uses_torch and "torch" in sys.modules and not torch_preloaded:
        log.warning("stage %s imported torch without seeding it: declare uses_torch=True", name)
    # benchmarks/bench_pipeline.py reads this line: the body is the stage's own work, the rest overhead.
    log.info("done in %.1f s (body %.2f s)", time.perf_counter() - start, body_seconds)


def leave_as_follower() -> None:
    """End a follower rank now, without Python's teardown. The DDP model in the frames being unwound
    holds gloo's process group; freeing it joins gloo's threads, which can wait forever on a peer that
    has already left (seen: rank 1 of a 2-process prior hung in ~ProcessGroupGloo after rank 0 exited).
    A follower has nothing left to write or close: its writes were dropped and it opened no run."""
    _exit_now()


def end_process() -> None:
    """End a stage process that has done its work, without Python's teardown (status 0).

    A stage's command ends once its outputs are in place and its run is recorded (the spool is fsynced,
    the sync runs in its own process); DVC waits for the process to exit before it hashes the outputs.
    Tearing down the interpreter after importing torch, transformers or Great Expectations cost 4-5 s
    per stage on the loaded 2-core machine (gate, image_encoder, train_vlm; check_params 0.2 s), time in
    which nothing is written. Only the stage modules' `__main__` blocks call this, never code that runs
    inside another process (a test). Under a profiler or tracer (`python -m cProfile`, coverage) it
    returns and Python exits as usual: they write their results at exit."""
    if sys.getprofile() is None and sys.gettrace() is None:
        _exit_now()


def _exit_now() -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def stage_main(
    name: str, body: Callable[[Params], None], uses_torch: bool = True, tracked: bool = True, trains: bool = False
) -> Callable[[], None]:
    def main() -> None:
        run_stage(name, body, uses_torch, tracked, trains)

    return main
