import hashlib
import json
import os
from pathlib import Path

import pytest

from synth2 import paths
from synth2.io import MissingInputError, atomic_path, read_parquet
from tests.conftest import run_stage, write_params

OUTPUTS = [
    paths.PIXELS,
    paths.POOL,
    paths.REAL_TRAIN,
    paths.TEXT_CORPUS,
    paths.VAL,
    paths.TEST,
    paths.CONCEPTS,
    paths.PREPARE_METRICS,
]


def digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256((root / p).read_bytes()).hexdigest() for p in OUTPUTS}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        workspace = tmp_path / name
        workspace.mkdir()
        write_params(workspace, {"seed": seed})
        run_stage("prepare", workspace)
        runs[name] = digests(workspace)
    assert runs["a"] == runs["b"]
    differing = [p for p in runs["a"] if runs["a"][p] != runs["c"][p]]
    assert len(differing) >= 5  # every sampled table and the pixels change; concepts need not


def test_summary_is_a_metric_with_counts(workspace: Path):
    run_stage("prepare", workspace)
    summary = json.loads((workspace / paths.PREPARE_METRICS).read_text())
    assert summary["counts"]["real_train"] == 200
    assert summary["n_held_out"] == len(summary["held_out_combos"]) == 12
    leftovers = [p for p in (workspace / "data").rglob("*") if p.name.startswith(".")]
    assert sorted(p.name for p in (workspace / paths.PREPARED).iterdir()) == sorted(p.name for p in OUTPUTS[:-1])
    assert not leftovers


def test_crash_mid_write_keeps_the_previous_file(tmp_path: Path):
    target = tmp_path / "table.parquet"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["table.parquet"]


def test_atomic_directory_replace(tmp_path: Path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]


def test_missing_or_corrupt_input_names_the_stage(tmp_path: Path):
    with pytest.raises(MissingInputError, match=r"run the 'prepare' stage first"):
        read_parquet(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(MissingInputError, match=r"cannot be read.*dvc repro prepare"):
        read_parquet(bad)
