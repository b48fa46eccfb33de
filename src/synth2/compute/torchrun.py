"""A training stage on `compute.train_processes` processes: the stage relaunches itself under torchrun.

With `train_processes: N > 1` the stage process (the one DVC started) runs
`python -m torch.distributed.run --standalone --nproc-per-node N -m synth2.stages.NAME ...` and waits.
Every rank runs the stage from the top (same params, seed, data and initial weights), trains with torch
DDP inside the one training loop (synth2.models.ddp), and there the followers (ranks 1..N-1) stop:
`FollowerDone` ends them quietly. Rank 0 alone goes on to save the model and write every output,
atomically, in the same format as a one-process run. The stage frame (synth2.stage) sees to it: it opens
no MLflow run on a follower, and a follower that gets through the whole body (a stage that, in some
profile, trains nothing) is stopped there with `FollowerDone` too, which drops its writes, so two
processes never race on one output.

torchrun (`--standalone`: a rendezvous on a free local port) is the engine: it starts the ranks, gives
them RANK / WORLD_SIZE / LOCAL_RANK, and stops them all when one fails. The launcher forwards their output
and, on failure, repeats the first rank's one-line `error: stage ...` as its own last line, so a failed
DDP stage reads like any failed stage. One machine (its CPU cores or its GPUs); training across machines
is left to the cluster's own torchrun or Ray Train.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from synth2.errors import Synth2Error

log = logging.getLogger("synth2")

STAGE_ERROR_PREFIX = "error: stage '"  # what synth2.stage prints for a Synth2Error


class FollowerDone(BaseException):  # noqa: N818  (a signal, not an error: BaseException passes `except Exception`)
    """Raised on ranks 1..N-1 when DDP training is over: rank 0 writes the outputs, the followers stop."""


def launched() -> bool:
    """This process is a rank torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_follower() -> bool:
    return rank() != 0


def needs_launch(train_processes: int) -> bool:
    return train_processes > 1 and not launched()


def check_world(train_processes: int) -> None:
    """A rank must belong to the launch its params ask for (not, say, a hand-made torchrun of another size)."""
    world = int(os.environ["WORLD_SIZE"])
    if world != train_processes:
        raise Synth2Error(
            f"compute.train_processes is {train_processes} but this stage runs in {world} torchrun processes; "
            "run the stage itself (`python -m synth2.stages.NAME`): it starts torchrun with the right count"
        )


def enter_rank() -> None:
    """Per-rank setup before the stage body: each rank takes its own GPU."""
    import torch

    if torch.cuda.is_available():
        # `device: cuda` then means this rank's GPU (torch's current device), not GPU 0 for every rank.
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def launch(stage: str, processes: int) -> int:
    """Run this stage's command under torchrun on `processes` local processes; return the exit status."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    target = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        *target,
        *sys.argv[1:],
    ]
    # One thread per rank unless told otherwise (synth2.stage.seed_everything); said here, torchrun's
    # warning that it chose it is noise.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    log.info("%s: training on %d processes (torchrun, torch DDP)", stage, processes)
    errors: list[str] = []
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1) as proc:
        try:
            for line in proc.stderr:
                sys.stderr.write(line)
                if line.startswith(STAGE_ERROR_PREFIX):
                    errors.append(line.rstrip("\n"))
            code = proc.wait()
        except BaseException:
            proc.terminate()
            raise
    if code:
        last = (
            errors[0]
            if errors
            else (
                f"{STAGE_ERROR_PREFIX}{stage}': training on {processes} processes failed (torchrun exit status "
                f"{code}); the traceback above names the rank"
            )
        )
        print(last, file=sys.stderr)
    return code
