"""The frame every DVC stage runs in: params, seeding, tracking, and one-line errors.

A stage module defines `run(params)` and `main = stage_main("name", run)`. Any `Synth2Error` (bad
params, a missing input, a failed gate) becomes one line on stderr and exit status 1. A stage that never
touches torch says so (`uses_torch=False`: prepare and the gates): importing torch just to seed it costs
about 1.5 s, a gate's whole budget.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable

import numpy as np

from synth2 import tracking
from synth2.errors import Synth2Error
from synth2.params import Params, load_params

log = logging.getLogger("synth2")


def seed_everything(seed: int, uses_torch: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if not uses_torch:
        return
    import torch

    torch.manual_seed(seed)
    # The world profile's models are tiny; on a busy 2-core machine two threads were measured 4-10x
    # slower than one (spinning OpenMP threads). SYNTH2_TORCH_THREADS overrides it.
    torch.set_num_threads(int(os.environ.get("SYNTH2_TORCH_THREADS", "1")))


def run_stage(name: str, body: Callable[[Params], None], uses_torch: bool = True) -> None:
    # Our own progress at INFO; libraries (GX, MLflow, DVC) only when they warn.
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {name} %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        params = load_params()
        seed_everything(params.seed, uses_torch)
        # Tracking is recorded from inside the stage so that a bare `dvc repro` records too.
        with tracking.stage_run(name, params):
            body(params)
        if not uses_torch and "torch" in sys.modules:
            log.warning("stage %s imported torch without seeding it: declare uses_torch=True", name)
    except Synth2Error as exc:
        print(f"error: stage '{name}': {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("done in %.1f s", time.perf_counter() - start)


def stage_main(name: str, body: Callable[[Params], None], uses_torch: bool = True) -> Callable[[], None]:
    def main() -> None:
        run_stage(name, body, uses_torch)

    return main
