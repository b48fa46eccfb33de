import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth2 import paths
from synth2.io import MissingInputError, atomic_path, read_json, read_parquet, read_tensors
from tests.conftest import run_stage, write_params

OUTPUTS = [
    *(paths.image_table(name) for name in paths.IMAGE_SETS),
    *(paths.image_pixels(name) for name in paths.IMAGE_SETS),
    paths.TEXT_CORPUS,
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
    written = sorted(str(p.relative_to(workspace)) for p in (workspace / paths.PREPARED).rglob("*") if p.is_file())
    assert written == sorted(str(p) for p in OUTPUTS[:-1])
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


def test_missing_or_corrupt_input_names_the_stage_that_writes_it(tmp_path: Path, monkeypatch):
    """The stage to run comes from the pipeline's description, for a declared output, a file inside one,
    and one of a foreach stage's items."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match=r"run the 'prepare' stage first \(dvc repro prepare\)"):
        read_parquet(paths.REAL_TRAIN)
    with pytest.raises(MissingInputError, match=r"run the 'embed_images' stage first"):
        read_tensors(paths.TEST_EMBEDDINGS)
    with pytest.raises(MissingInputError, match=r"run the 'train_vlm@synth' stage first"):
        read_json(paths.vlm_dir("synth") / "config.json")
    paths.TEST.parent.mkdir(parents=True)
    paths.TEST.write_bytes(b"not parquet")
    with pytest.raises(MissingInputError, match=r"cannot be read.*dvc repro prepare"):
        read_parquet(paths.TEST)


def test_every_image_set_keeps_its_rows_aligned_with_its_pixels(workspace: Path):
    """Row i of an image set's pixels is the image of its table's row i; ids stay unique across sets."""
    from safetensors.numpy import load_file

    run_stage("prepare", workspace)
    ids = []
    for name in paths.IMAGE_SETS:
        table = pd.read_parquet(workspace / paths.image_table(name))
        pixels = load_file(str(workspace / paths.image_pixels(name)))["pixels"]
        assert len(pixels) == len(table) > 0 and pixels.dtype == np.uint8
        ids += table["image_id"].tolist()
    assert len(ids) == len(set(ids))


def test_fewer_human_pairs_are_a_prefix_and_everything_else_is_identical(tmp_path: Path):
    """A sweep over the number of human pairs compares nested training sets on the same pool, corpus,
    validation and test sets: same ids, same pixels, same references (byte for byte)."""
    sizes = {"small": 60, "large": 200}
    for name, size in sizes.items():
        (tmp_path / name).mkdir()
        write_params(tmp_path / name, {"world": {"prepare": {"real_train_size": size}}})
        run_stage("prepare", tmp_path / name)
    small, large = (digests(tmp_path / name) for name in sizes)
    real = {str(paths.image_table("real_train")), str(paths.image_pixels("real_train"))}
    assert {p for p in small if small[p] != large[p]} == real | {str(paths.PREPARE_METRICS)}

    tables = {name: read_parquet(tmp_path / name / paths.image_table("real_train")) for name in sizes}
    pixels = {name: read_tensors(tmp_path / name / paths.image_pixels("real_train"))["pixels"] for name in sizes}
    assert len(tables["small"]) == 60 and len(tables["large"]) == 200
    pd.testing.assert_frame_equal(tables["small"], tables["large"].head(60))
    assert np.array_equal(pixels["small"], pixels["large"][:60])


def test_a_stage_failing_between_its_writes_leaves_every_previous_output(workspace: Path, monkeypatch, capsys):
    """The stage frame's all_or_nothing(): prepare fails on its last write (metrics/prepare.json), after it
    wrote every image set, the corpus and the concepts of a new seed; every previous output stays
    byte-identical and no temporary file is left. (With all_or_nothing a no-op, the new seed's tables land.)"""
    import synth2.stages.prepare as prepare
    from synth2.stage import run_stage as run_in_process

    run_stage("prepare", workspace)
    before = digests(workspace)
    write_params(workspace, {"seed": 1})  # every sampled output of seed 1 differs from seed 0's
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("SYNTH2_TRACKING", "0")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(prepare, "write_json", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        run_in_process("prepare", prepare.run, uses_torch=False, tracked=False)
    assert exit_info.value.code == 1
    assert "error: stage 'prepare': unexpected OSError" in capsys.readouterr().err
    assert digests(workspace) == before
    leftovers = [p for p in (workspace / "data").rglob("*") if p.name.startswith(".")]
    assert not leftovers
