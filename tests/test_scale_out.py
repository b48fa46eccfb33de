"""Scale-out for real: captions and synthesize on a real local Ray cluster, a training stage on two torch DDP
processes, and the one-line failures of both.

One Ray head serves the module (`ray start --head --block`, 2 CPUs, token authentication with a token of
its own), stopped through its process group, by PID. Ray 2.60 binds its servers to every interface
whatever `--node-ip-address` says (it resolves 127.0.0.1 to the machine's address); the stages reach it
at 127.0.0.1. The stages' inputs come from the session's tiny pipeline (conftest.py `tiny_pipeline`),
whose outputs the local engine produced with one shard.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from synth2 import paths
from tests.conftest import stage_env
from tests.services import free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RAY_CPUS = 2
INPUTS = (
    "data/prepared",
    "data/embeddings",
    "data/selections",
    "models/caption_lm",
    "models/prior",
    "models/image_encoder",
)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    """A one-node Ray cluster; yields the environment stages need to join it (address in RAY_ADDRESS)."""
    port = free_port()
    # Ray's temporary directory holds unix sockets, whose paths must stay short.
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = stage_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}"]
    cmd += [f"--num-cpus={RAY_CPUS}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"]
    with open(temp / "head.log", "w") as log:
        head = subprocess.Popen(
            [*cmd, f"--temp-dir={temp}"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(
            [str(BIN / "ray"), "health-check", f"--address={address}"], env=env, capture_output=True
        ).returncode:
            assert head.poll() is None and time.monotonic() < deadline, (temp / "head.log").read_text()[-2000:]
            time.sleep(1)
        yield env | {"RAY_ADDRESS_FOR_TESTS": address}
    finally:
        # `ray start --block` and everything it started share its process group; its raylet takes over
        # 10 s to stop on SIGTERM (measured), and the cluster's state is thrown away: SIGKILL after 3 s.
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp, ignore_errors=True)


def workspace(tiny_pipeline: Path, target: Path, compute: dict) -> Path:
    """The pipeline's params with `compute` changed, and copies of the inputs captions and synthesize read."""
    target.mkdir()
    for rel in INPUTS:
        shutil.copytree(tiny_pipeline / rel, target / rel)
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["compute"] |= compute
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def run(stage: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"synth2.stages.{stage}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def outputs(root: Path, *relative: str) -> dict[str, bytes]:
    files = {}
    for rel in relative:
        for file in sorted((root / rel).rglob("*")) if (root / rel).is_dir() else [root / rel]:
            if file.is_file():
                files[str(file.relative_to(root))] = file.read_bytes()
    return files


def on_ray(ray_head: dict[str, str], **compute) -> dict:
    return {"engine": "ray", "ray_address": ray_head["RAY_ADDRESS_FOR_TESTS"], **compute}


@pytest.mark.parametrize(
    ("stage", "outs", "shards"),
    [
        ("captions", ["data/captions"], 3),
        ("synthesize", ["data/synthetic", "metrics/synthesize.json"], 2),
    ],
)
def test_a_stage_on_ray_writes_what_the_local_engine_writes_with_the_same_shards(
    stage: str, outs: list[str], shards: int, ray_head, tiny_pipeline: Path, tmp_path: Path
):
    local = workspace(tiny_pipeline, tmp_path / "local", {"engine": "local", "shards": shards})
    ray = workspace(tiny_pipeline, tmp_path / "ray", on_ray(ray_head, workers=2, shards=shards))
    for root in (local, ray):
        result = run(stage, root, ray_head)
        assert result.returncode == 0, result.stderr[-3000:]
    assert outputs(ray, *outs) == outputs(local, *outs)  # byte for byte
    assert outputs(ray, *outs) != outputs(tiny_pipeline, *outs)  # more than one shard: other seeds
    log = result.stderr
    assert "2 Ray workers ready" in log and f"({shards}/{shards} shards" in log  # progress, rows done / total
    assert re.search(rf"{stage}: \d+ rows on {shards} shard\(s\) on 2 Ray workers .*start-up [\d.]+ s, work", log)


def test_one_shard_is_the_stage_as_it_was(tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch):
    """The pipeline ran the new code path with its default compute (local, one shard); its outputs are what
    the plain functions the stages called before sharding existed give, with the stage's own seed."""
    from synth2.io import read_parquet, read_tensors
    from synth2.params import load_params
    from synth2.profiles.world import captions as world_captions
    from synth2.stages.captions import even_concepts
    from synth2.stages.synthesize import embedding_synthesizer

    monkeypatch.chdir(tiny_pipeline)
    params = load_params()
    assert params.compute.engine == "local" and params.compute.shards == 1
    p = params.captions
    concepts = read_parquet(paths.CONCEPTS)["concept"].tolist()
    prompts = [
        p.prompt_template.format(concepts=c)
        for c in even_concepts(concepts, p.n_prompted, np.random.default_rng(params.seed))
    ]
    generator = world_captions.caption_generator(params)
    assert read_parquet(paths.PROMPTED_CAPTIONS)["caption"].tolist() == generator.generate(prompts, params.seed)
    unprompted = generator.generate([p.unprompted_template] * p.n_unprompted, params.seed + 1)
    assert read_parquet(paths.UNPROMPTED_CAPTIONS)["caption"].tolist() == unprompted

    synthesize = embedding_synthesizer(params, None)
    for name in ("balanced", "unbalanced"):
        captions = read_parquet(paths.synthetic_captions(name))["caption"].tolist()
        written = read_tensors(paths.synthetic_embeddings(name))["embeddings"]
        assert np.array_equal(written, synthesize(captions, params.seed))  # bit for bit


def test_an_unreachable_ray_address_is_one_line_naming_it_and_writes_nothing(tiny_pipeline: Path, tmp_path: Path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    root = workspace(tiny_pipeline, tmp_path / "ws", {"engine": "ray", "ray_address": address})
    start = time.perf_counter()
    result = run("captions", root, stage_env())
    assert result.returncode == 1 and time.perf_counter() - start < 60
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: stage 'captions': compute.ray_address: no Ray cluster answers at ") and address in last
    )
    assert not (root / "data" / "captions").exists()


def die_on_second_shard(model, rows: list[int]) -> list[int]:
    if rows[0] >= 50:
        os._exit(1)  # the worker process dies, as on a crash or an out-of-memory kill
    return rows


def test_a_worker_that_dies_mid_stage_is_named_in_one_line_and_nothing_comes_back(ray_head, monkeypatch):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # before Ray reads them, on import
        monkeypatch.setenv(key, ray_head[key])
    import ray
    from ray import cloudpickle  # Ray's own copy pickles the shard functions

    from synth2.compute.pool import ShardWork, shard_pool
    from synth2.compute.ray_pool import RayWorkerError
    from tests.conftest import default_params

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import the tests
    compute = default_params({"compute": on_ray(ray_head, workers=2, shards=2)}).compute
    returned = None
    with pytest.raises(RayWorkerError) as info:
        with shard_pool(compute, ShardWork(dict, ()), "test") as pool:
            returned = pool.map(die_on_second_shard, list(range(100)))
    message = str(info.value)
    assert re.search(
        r"^test: Ray worker [12] of 2 \(pid \d+ on [\d.]+\) died while running shard 2/2; nothing", message
    )
    assert "\n" not in message and returned is None
    assert not ray.is_initialized()  # the pool left the cluster


def test_a_training_stage_on_two_ddp_processes(tiny_pipeline: Path, tmp_path: Path):
    """compute.train_processes: 2 runs the prior stage under torchrun with gloo: both ranks end with the
    same parameters, rank 0 alone writes a checkpoint of the usual format, and the run sees the data a
    single process sees (each rank trains on its half of the same global batch)."""
    from synth2.models.ddp import parameter_checksum
    from synth2.models.prior import load_prior

    root = workspace(tiny_pipeline, tmp_path / "ws", {"train_processes": 2})
    result = run("prior", root, stage_env())
    assert result.returncode == 0, result.stderr[-3000:]
    sums = re.findall(r"prior rank (\d) prior: parameters sha256 (\w+) at the end, equal on all 2 ranks", result.stderr)
    assert sorted(rank for rank, _ in sums) == ["0", "1"] and len({s for _, s in sums}) == 1
    prior, _ = load_prior(root / paths.PRIOR)
    assert parameter_checksum(prior) == sums[0][1]  # rank 0's checkpoint holds what both ranks trained
    ddp, single = (json.loads((r / paths.PRIOR_METRICS).read_text()) for r in (root, tiny_pipeline))
    assert ddp["first_loss"] == pytest.approx(single["first_loss"], rel=1e-6)  # the same first global batch
    assert ddp["final_loss"] == pytest.approx(single["final_loss"], rel=1e-2)
    assert not list((root / "models").glob(".*"))  # no temporary siblings left by either rank
