"""Connecting a stage to Ray, and what its workers need to run the workspace's code on any node.

* `compute.ray_address: ''` starts a Ray instance inside the stage, sized to the workers it asks for, and
  stops it when the stage ends. Otherwise the stage joins a running cluster: HOST:PORT of the head (the
  port `ray start --head --port` opened), `auto` (a cluster started on this machine) or `ray://HOST:10001`
  (Ray Client, for a driver outside the cluster's network).
* An address nobody answers at fails in seconds with one line: `ray.init` itself retries for minutes
  (measured: still retrying after 2 minutes against a closed port), so the stage first opens a plain TCP
  connection to the address.
* Workers run the workspace's `src/synth2` (shipped as a Ray `py_modules` runtime env, the code DVC
  hashed, not whatever copy a node has installed) with the stage's thread and offline settings; the
  libraries (torch, transformers, ...) come from the node's environment (docker/Dockerfile's image).
* A stage's input files reach workers through Ray's object store (`pack_inputs` / `unpack_inputs`): a
  worker on another machine needs no shared filesystem and no DVC checkout.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import synth2
from synth2.errors import Synth2Error

if TYPE_CHECKING:
    from synth2.params import ComputeParams

log = logging.getLogger("synth2")

PROBE_TIMEOUT_S = 5.0
# Settings a worker must share with the stage for its shards to compute the same numbers the stage's
# own process would (threads), and to stay offline like the stage (Hugging Face).
FORWARDED_ENV = ("SYNTH2_TORCH_THREADS", "HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")


class RayClusterError(Synth2Error):
    """The Ray cluster cannot be reached or cannot host the requested workers."""


def connect(compute: ComputeParams) -> str:
    """Join (or start) Ray for this stage; returns how to name the cluster in messages."""
    import ray

    address = compute.ray_address.strip()
    runtime_env = worker_runtime_env()
    if not address:
        ray.init(
            num_cpus=max(1, round(compute.workers * compute.cpus_per_worker)),
            num_gpus=compute.workers * compute.gpus_per_worker if compute.gpus_per_worker else None,
            include_dashboard=False,
            runtime_env=runtime_env,
            logging_level=logging.WARNING,
        )
        return "a local Ray started by the stage"
    if address != "auto":
        probe(address)
    try:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, ... depending on the failure
        raise RayClusterError(
            f"compute.ray_address: cannot join the Ray cluster at '{address}' ({type(exc).__name__}: "
            f"{first_line(exc)}); check the address and that this machine runs Ray {ray.__version__} like the "
            "cluster, or set compute.ray_address: '' to start a local Ray"
        ) from None
    return f"the Ray cluster at {address}"


def probe(address: str) -> None:
    """Fail fast, with one line naming the address, when nothing listens there."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayClusterError(
            f"compute.ray_address: no Ray cluster answers at '{address}' ({exc.strerror or type(exc).__name__}); "
            f"start one there (`ray start --head --port {port}`), fix the address, or set compute.ray_address: '' "
            "to start a local Ray"
        ) from None


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`."""
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayClusterError(
            f"compute.ray_address: '{address}' is not HOST:PORT, ray://HOST:PORT, auto or '' (a local Ray)"
        )
    return host.strip("[]"), int(port)


def worker_runtime_env() -> dict:
    """The workspace's synth2 package and the stage's settings, for every worker of this stage."""
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"py_modules": [str(Path(synth2.__file__).parent)], "env_vars": env_vars}


def check_resources(compute: ComputeParams, cluster: str) -> None:
    """Workers that cannot all be placed would wait forever: say so at once, naming what is missing."""
    import ray

    available = ray.cluster_resources()
    for resource, per_worker in (("CPU", compute.cpus_per_worker), ("GPU", compute.gpus_per_worker)):
        needed, total = compute.workers * per_worker, available.get(resource, 0.0)
        if per_worker and needed > total:
            key = f"compute.{resource.lower()}s_per_worker"
            raise RayClusterError(
                f"compute.workers: {compute.workers} workers x {per_worker:g} {resource} ({key}) need {needed:g} "
                f"{resource}s but {cluster} has {total:g}; lower compute.workers or {key}, or add nodes"
            )


def pack_inputs(paths: tuple[Path, ...]) -> dict[str, bytes]:
    """Every file under `paths` (relative to the project root), by relative path. A missing path is left
    out: the worker's model loader then names the stage to run, as it does in the stage's process."""
    files: dict[str, bytes] = {}
    for path in paths:
        path = Path(path)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"stage inputs are paths relative to the project root, got {path}")
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files.update({str(f): f.read_bytes() for f in found})
    return files


def unpack_inputs(files: dict[str, bytes]) -> Path:
    """A private project directory holding the packed inputs, where a worker runs with the stage's paths."""
    directory = Path(tempfile.mkdtemp(prefix="synth2-worker-"))
    for name, data in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
