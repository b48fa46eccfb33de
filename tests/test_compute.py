"""synth2.compute without a cluster: the split, the seeds, the local engine, shipping inputs, addresses,
and what the stage frame does on a torchrun rank.

The Ray engine and DDP run for real in tests/test_scale_out.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from synth2.compute.pool import LocalPool, ShardWork, shard_pool
from synth2.compute.ray_cluster import RayClusterError, pack_inputs, probe, split_address, unpack_inputs
from synth2.compute.shards import concatenate, shard_bounds, shard_seed
from tests.conftest import default_params, write_params
from tests.services import free_port


@pytest.mark.parametrize(("n_rows", "shards"), [(10, 1), (10, 3), (9, 3), (2, 4), (0, 3), (7, 7)])
def test_shards_are_contiguous_in_row_order_and_even(n_rows: int, shards: int):
    bounds = shard_bounds(n_rows, shards)
    assert len(bounds) == shards and bounds[0][0] == 0 and bounds[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_one_shard_keeps_the_stage_seed_and_more_shards_get_distinct_reproducible_ones():
    assert shard_seed(7, 0, 1) == 7  # shards: 1 reproduces the unsharded stage
    seeds = [shard_seed(7, i, 4) for i in range(4)]
    assert len(set(seeds)) == 4 and seeds == [shard_seed(7, i, 4) for i in range(4)]
    # Not seed + i: the unprompted set (seed + 1) must not share a stream with prompted shard 1.
    assert set(seeds).isdisjoint(shard_seed(8, i, 4) for i in range(4))
    assert all(0 <= s < 2**32 for s in seeds)


def test_concatenate_keeps_one_part_as_it_is_and_joins_in_order():
    part = [1, 2]
    assert concatenate([part]) is part
    assert concatenate([[1], [2, 3], []]) == [1, 2, 3]
    arrays = [np.ones((2, 3)), np.zeros((1, 3))]
    assert concatenate(arrays).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]


class Sampler:
    """A stand-in model whose output depends on its rows and its seed, like caption sampling."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.calls = 0

    def __call__(self, rows: list[int], seed: int) -> list[float]:
        self.calls += 1
        noise = np.random.default_rng(seed).random(len(rows))
        return [self.scale * r + float(n) for r, n in zip(rows, noise)]


def sample(model: Sampler, rows: list[int], seed: int) -> list[float]:
    return model(rows, seed)


def test_the_local_engine_with_one_shard_is_exactly_the_unsharded_call():
    rows = list(range(50))
    pool = LocalPool(ShardWork(partial(Sampler, 3), ()), shards=1, label="test")
    assert pool.map(sample, rows, seed=11) == Sampler(3)(rows, 11)
    assert pool.model.calls == 1  # the model is built once and called once


def test_the_local_engine_joins_shards_in_order_with_their_own_seeds():
    rows = list(range(10))
    pool = LocalPool(ShardWork(partial(Sampler, 1), ()), shards=3, label="test")
    expected = [x for i, (a, b) in enumerate(shard_bounds(10, 3)) for x in Sampler(1)(rows[a:b], shard_seed(5, i, 3))]
    assert pool.map(sample, rows, seed=5) == expected
    # No seed: fn(model, rows); no rows: one empty call keeps the output's type.
    assert pool.map(lambda model, shard: [r * 2 for r in shard], rows) == [r * 2 for r in rows]
    embed = lambda model, shard: np.zeros((len(shard), 4))  # noqa: E731
    assert pool.map(embed, []).shape == (0, 4)


def test_shard_pool_picks_the_engine_from_params_and_logs_progress(caplog):
    compute = default_params({"compute": {"engine": "local", "shards": 2}}).compute
    with caplog.at_level("INFO", logger="synth2"), shard_pool(compute, ShardWork(partial(Sampler, 1), ()), "t") as pool:
        assert isinstance(pool, LocalPool)
        pool.map(sample, list(range(6)), seed=0)
    assert "t: 3/6 rows done (1/2 shards" in caplog.text and "t: 6/6 rows done (2/2 shards" in caplog.text
    assert "t: 6 rows on 2 shard(s) in this process: start-up" in caplog.text
    assert set(pool.timings) == {"t_startup_s", "t_work_s"}  # the stage records them (the pool cannot)


def test_inputs_travel_to_a_private_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "lm" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "lm" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    (tmp_path / "data.parquet").write_text("rows")
    packed = pack_inputs((Path("models/lm"), Path("data.parquet"), Path("missing")))
    assert set(packed) == {"models/lm/sub/w.bin", "data.parquet"}
    copy = unpack_inputs(packed)
    assert (copy / "models/lm/sub/w.bin").read_bytes() == b"\x00\x01" and (copy / "data.parquet").read_text() == "rows"
    with pytest.raises(ValueError, match="relative"):
        pack_inputs((tmp_path / "data.parquet",))


def test_ray_addresses_are_parsed_and_a_silent_one_fails_fast_in_one_line():
    assert split_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert split_address("ray://head:10001") == ("head", 10001)
    with pytest.raises(RayClusterError, match="is not HOST:PORT"):
        split_address("head")
    port = free_port()  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(RayClusterError) as info:
        probe(f"127.0.0.1:{port}")
    message = str(info.value)
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in message and "compute.ray_address" in message
    assert "\n" not in message and time.perf_counter() - start < 10


@pytest.mark.parametrize("rank", [0, 1])
def test_on_a_torchrun_launch_rank_0_alone_writes_and_records(rank: int, tmp_path: Path, monkeypatch):
    """A follower that gets through the whole stage body (it trained nothing, e.g. a pretrained model)
    leaves nothing behind and opens no MLflow run; rank 0 writes and records as one process does. The
    stage frame decides it: synth2.io knows nothing of ranks."""
    from synth2 import stage
    from synth2.io import write_json

    write_params(tmp_path, {"compute": {"train_processes": 2}})
    monkeypatch.chdir(tmp_path)
    for name, value in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(stage, "terminate_as_interrupt", lambda: None)  # the test process keeps its SIGTERM
    monkeypatch.setattr(stage, "leave_as_follower", lambda: None)  # and goes on (a follower's process exits)
    runs = []

    @contextlib.contextmanager
    def stage_run(name, params):
        runs.append(name)
        yield None

    monkeypatch.setattr(stage.tracking, "stage_run", stage_run)
    out = tmp_path / "out" / "o.json"
    level = logging.getLogger("synth2").level
    try:
        stage.run_stage("t", lambda params: write_json({"rank": rank}, out), uses_torch=False, trains=True)
    finally:
        logging.getLogger("synth2").setLevel(level)
    if rank == 0:
        assert out.read_text() == '{\n  "rank": 0\n}\n' and runs == ["t"]
    else:
        assert list(out.parent.iterdir()) == [] and runs == []
