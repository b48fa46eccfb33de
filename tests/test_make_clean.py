"""`make clean` removes the pipeline's outputs and nothing else: the outs dvc.yaml declares, except the
committed metrics/ and plots/; never user data such as the default COCO location (data/coco/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMMITTED = ("metrics/", "plots/")  # DVC outs that git tracks: the results the README reports


def make_variable(name: str) -> list[str]:
    """A variable of the repository's Makefile, as make itself expands it."""
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), "--eval", f"print-var: ; @echo $({name})", "print-var"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def dvc_outs(tmp_path: Path, profile: str, overrides: dict | None = None) -> set[str]:
    from dvc.repo import Repo

    project = tmp_path / profile
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project)
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"profile": profile} | (overrides or {})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(project), no_scm=True)
    with Repo(str(project)) as repo:
        return {out.def_path for stage in repo.index.stages for out in stage.outs}


@pytest.mark.parametrize("profile", ["world", "coco"])
def test_clean_removes_exactly_the_uncommitted_dvc_outs(profile: str, tmp_path: Path):
    outs = {out for out in dvc_outs(tmp_path, profile) if not out.startswith(COMMITTED)}
    assert set(make_variable("PIPELINE_OUTS")) == outs


def test_clean_removes_the_pixel_paths_outs_when_it_is_on(tmp_path: Path):
    """PIXEL_OUTS: what the stages `pixel_space.variants` adds write (each out, or the folder holding it),
    and nothing else; plus the untracked timings."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    pixel_on = {"pixel_space": params["pixel_space"] | {"variants": {"synth_pixel": "balanced"}}}
    outs = {out for out in dvc_outs(tmp_path, "world", pixel_on) if not out.startswith(COMMITTED)}
    added = outs - set(make_variable("PIPELINE_OUTS"))
    folders = set(make_variable("PIXEL_OUTS")) - {"reports/timings"}
    assert added and {out if out in folders else str(Path(out).parent) for out in added} == folders


def test_clean_keeps_user_data_and_the_committed_results(tmp_path: Path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path)
    outs = make_variable("PIPELINE_OUTS")
    for out in outs:  # directories get a file inside, files are files
        path = tmp_path / out / "part" if not Path(out).suffix else tmp_path / out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("pipeline output")
    coco = yaml.safe_load((ROOT / "params.yaml").read_text())["coco"]["prepare"]
    kept = [
        coco["annotations"],  # the default COCO location
        f"{coco['image_dir']}/000000000009.jpg",
        "models/my-llm/config.json",  # a checkpoint a user keeps in the project
        "reports/study/study.md",
        "metrics/evaluate.json",
        "plots/evaluate.csv",
        ".dvc/tmp/exps/queued",
    ]
    for name in kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("keep me")
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert [out for out in outs if (tmp_path / out).exists()] == []
    assert [name for name in kept if not (tmp_path / name).is_file()] == []
