"""Metrics that must not depend on the machine: the same inputs under other BLAS kernels and thread counts.

A fresh clone on another machine reproduced every model and embedding but not the image encoder's
probe accuracies or the diversity report's mean pairwise distance. Each test below computes them in
two subprocesses, one with the machine's best kernels and two threads, one with OpenBLAS's AVX
Sandybridge kernel, torch's default (non-SIMD) CPU capability and one thread, and asks for equal bits.
On the code before the fix (float32 L-BFGS probe, BLAS dot) 3 of the 4 probe accuracies and 1 of the
16 distances below differed between the two.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import synth2

SETTINGS = {
    "best kernels, 2 threads": {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
    "AVX kernels, 1 thread": {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "ATEN_CPU_CAPABILITY": "default",
        # Every x86-64 CPU since 2011 runs it (its generic Prescott kernel rounded dots like SkylakeX here);
        # other BLAS libraries ignore the variable.
        **({"OPENBLAS_CORETYPE": "Sandybridge"} if platform.machine().lower() in {"x86_64", "amd64"} else {}),
    },
}

# Correlated, badly conditioned features with noisy labels, like an autoencoder's embeddings: L-BFGS
# stopped at sklearn's default tolerance gave different accuracies under the two settings here.
CHILD = """
import json
import numpy as np
from threadpoolctl import threadpool_info
from synth2.diversity import mean_pairwise_distance
from synth2.models.autoencoder import linear_probe

rng = np.random.default_rng(0)
n, d = 3000, 32
z = rng.normal(size=(n, d))
x = (z @ (rng.normal(size=(d, d)) * np.logspace(0, -3, d)).T).astype(np.float32)
labels = {f"a{i}": (z @ rng.normal(size=(d, 6)) + 2 * rng.normal(size=(n, 6))).argmax(1).astype(str) for i in range(4)}
# Positive mean like sentence embeddings: ||sum of rows||^2 is large, where a BLAS dot rounds.
distances = [mean_pairwise_distance(rng.normal(0.3, 1.0, size=(300, 384))) for _ in range(16)]
print(json.dumps({
    "blas": [i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"],
    "probe": linear_probe(x, labels, holdout=0.7),  # many test rows: many chances to flip
    "distances": [float.hex(v) for v in distances],
}))
"""


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    """CHILD's output under each of SETTINGS, run side by side."""
    base = {k: v for k, v in os.environ.items() if k not in {"OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY"}}
    # The children import the synth2 this process imported (a worktree's src/ before the installed one).
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(synth2.__file__).parents[1]), base.get("PYTHONPATH")]))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env={**base, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in SETTINGS.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def _compare(runs: dict[str, dict], key: str) -> None:
    (name_a, a), (name_b, b) = runs.items()
    assert a[key] == b[key], (
        f"{key} differ: {name_a} (BLAS {a['blas']}) {a[key]} vs {name_b} (BLAS {b['blas']}) {b[key]}"
    )


def test_linear_probe_is_bit_identical_across_kernels_and_threads(runs):
    _compare(runs, "probe")


def test_mean_pairwise_distance_is_bit_identical_across_kernels_and_threads(runs):
    _compare(runs, "distances")
