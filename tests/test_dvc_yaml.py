"""dvc.yaml is what the pipeline's description generates, and declares every module a stage can run.

dvc.yaml is generated (synth2.dvc_yaml) from synth2.pipeline and the stages' imports; these tests keep the
committed file equal to what the description generates, check the import analysis the code deps come
from, and cross-check DVC's own resolution of dvc.yaml for both profiles: every module a stage's import
closure reaches is covered by a dep DVC resolves, and every declared dep exists.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from synth2 import dvc_yaml, pipeline
from synth2.launch import stage_module
from tests.conftest import ROOT

PROFILES = pipeline.PROFILES


def test_the_committed_dvc_yaml_is_what_the_description_generates():
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml.render(), "dvc.yaml is stale: run `make dvc.yaml`"


def test_the_check_command_fails_on_a_hand_edit(tmp_path: Path):
    """`python -m synth2.dvc_yaml --check` (what a pre-commit or CI step runs) exits 1 on drift."""
    edited = tmp_path / "dvc.yaml"

    def check() -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "synth2.dvc_yaml", "--check", "--file", str(edited)]
        return subprocess.run(cmd, capture_output=True, text=True)

    edited.write_text((ROOT / "dvc.yaml").read_text())
    assert check().returncode == 0, check().stderr
    edited.write_text((ROOT / "dvc.yaml").read_text().replace("- data/captions\n", "", 1))
    drift = check()
    assert drift.returncode == 1 and "make dvc.yaml" in drift.stderr


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """{profile: {stage: (stage module, declared deps)}} as DVC resolves the committed dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    tmp = tmp_path_factory.mktemp("dvc-yaml")
    out = {}
    for profile in PROFILES:
        dvc_yaml.resolved_stages(ROOT / "dvc.yaml", ROOT / "params.yaml", profile, tmp)
        stages = {}
        with Repo(str(tmp / profile)) as repo:
            for stage in repo.index.stages:
                argv = shlex.split(stage.cmd)
                # The workspace's own sources run (those DVC hashes), not whatever copy is installed, through
                # the launcher (warm or cold, the same outputs: not a dep; dvc.yaml's header says so).
                launcher = ["PYTHONPATH=src", "python", "-m", "synth2.launch"]
                assert argv[:4] == launcher, f"{stage.name}: cmd should run src/ through synth2.launch"
                deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
                stages[stage.name] = (stage_module(argv[4]), deps)
        out[profile] = stages
    return out


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_module_a_stage_runs_is_a_declared_dep(profile: str, resolved):
    missing = {}
    for stage, (module, deps) in resolved[profile].items():
        reached = sorted(dvc_yaml.relative(m) for m in dvc_yaml.closure(module, profile))
        gaps = [p for p in reached if not dvc_yaml.untracked(p) and not covered(p, deps)]
        if gaps:
            missing[stage] = gaps
    assert not missing, f"profile {profile}: modules the stage runs but dvc.yaml does not declare: {missing}"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_declared_source_dep_exists(profile: str, resolved):
    absent = {
        stage: [d for d in deps if d.startswith("src/") and not (ROOT / d).exists()]
        for stage, (_, deps) in resolved[profile].items()
    }
    assert not {stage: d for stage, d in absent.items() if d}


def test_the_closure_follows_lazy_imports_and_only_the_stages_own_hooks():
    image_encoder = {dvc_yaml.relative(m) for m in dvc_yaml.closure("synth2.stages.image_encoder", "world")}
    caption_lm = {dvc_yaml.relative(m) for m in dvc_yaml.closure("synth2.stages.caption_lm", "world")}
    evaluate = {dvc_yaml.relative(m) for m in dvc_yaml.closure("synth2.stages.evaluate", "world")}
    assert "src/synth2/models/autoencoder.py" in image_encoder  # imported inside the hook function
    assert "src/synth2/models/autoencoder.py" not in caption_lm
    assert "src/synth2/models/tokenizer.py" in caption_lm
    assert "src/synth2/profiles/world/caption_lm.py" in caption_lm
    assert "src/synth2/profiles/coco/caption_lm.py" not in caption_lm
    assert not any(p.startswith("src/synth2/profiles/world/") and not p.endswith("evaluate.py") for p in evaluate)


def test_an_edited_hook_re_runs_its_stage_and_what_reads_its_outputs_only(tmp_path: Path):
    """The re-run counts README's table reports, from DVC's own resolution and graph of dvc.yaml."""
    deps, needs = dvc_yaml.resolved_stages(ROOT / "dvc.yaml", ROOT / "params.yaml", "world", tmp_path)
    files = [
        "src/synth2/profiles/world/evaluate.py",
        "src/synth2/profiles/world/report.py",
        "src/synth2/profiles/world/image_encoder.py",
        "src/synth2/profiles/coco/evaluate.py",
        "src/synth2/paths.py",
    ]
    counts = dvc_yaml.rerun_counts(deps, needs, files)
    assert counts == {files[0]: 2, files[1]: 1, files[2]: 10, files[3]: 0, files[4]: 0}
    # The image encoder reads the unlabelled pool only: the human pairs are not among its deps.
    assert not any("real_train" in d for d in deps["image_encoder"])


# ------------------------------------------------------------------------------------- lock hygiene


def committed_lock() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]


def test_the_committed_lock_holds_only_the_stages_of_dvc_yaml(resolved):
    stages = set(resolved["world"])
    assert set(committed_lock()) == stages, "dvc.lock has stages dvc.yaml lacks (or lacks some): re-run make run"


def test_the_committed_lock_records_the_committed_code():
    """A fresh clone's `make run` re-runs nothing for code: every code dep the lock records is the file as
    committed (DVC 3's md5 of the file's bytes)."""
    import hashlib

    stale = {}
    for stage, entry in committed_lock().items():
        for dep in entry.get("deps", []):
            path = ROOT / dep["path"]
            if dep["path"].startswith("src/") and path.is_file():
                if hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                    stale.setdefault(stage, []).append(dep["path"])
    assert not stale, f"dvc.lock records other versions of {stale}: re-run make run and commit dvc.lock"
