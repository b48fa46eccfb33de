"""Shared test helpers: a tiny params.yaml so whole stages run in seconds, and a stage runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synth2.launch import import_time_env
from synth2.presets import TINY, deep_merge

ROOT = Path(__file__).resolve().parents[1]

# pytest-xdist (`make test` runs the suite on several workers): each worker's flows get a Prefect home of
# their own, so two temporary Prefect servers never share one SQLite database. The checkout's .prefect/ (as
# the Makefile exports) when pytest is run by hand, never the user's ~/.prefect.
# pytest imports this file as `conftest`, the tests as `tests.conftest`: it runs twice; the worker's name is added once.
_prefect_home = Path(os.environ.get("PREFECT_HOME") or ROOT / ".prefect")
if _prefect_home.name != os.environ.get("PYTEST_XDIST_WORKER", ""):
    _prefect_home /= os.environ.get("PYTEST_XDIST_WORKER", "")
_prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect's server opens its database there, not makes it
os.environ["PREFECT_HOME"] = str(_prefect_home)

# Sizes small enough that every stage runs in seconds on 2 cores; real behaviour, tiny data.
TINY_PARAMS = TINY


def repository_params(overrides: dict | None = None) -> dict:
    """The repository's params.yaml (the one source of defaults) with `overrides` merged in."""
    return deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides or {})


def default_params(overrides: dict | None = None):
    """Typed `Params` of the repository's params.yaml plus `overrides` (e.g. a section for a unit test)."""
    from synth2.params import parse_params

    return parse_params(repository_params(overrides))


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    """Write params.yaml into `directory`: the repository's file, shrunk by TINY_PARAMS, plus overrides."""
    params = deep_merge(repository_params(TINY_PARAMS), overrides or {})
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# The variables that libraries read at import (synth2.launch.IMPORT_TIME_ENV) as the session's stage server
# (warm_stages) started with them, as JSON. Libraries that tests import in this process add their own to
# os.environ later (scikit-learn: KMP_DUPLICATE_LIB_OK, KMP_INIT_AT_FORK; synth2.gates: GX_ANALYTICS_ENABLED;
# ray.init: PYTHONBREAKPOINT), and the server refuses a stage whose values differ from its own: every stage
# a worker started after such an import ran cold (measured: 31 of 50 on one worker of a full run).
SERVER_IMPORT_ENV = "SYNTH2_TESTS_SERVER_IMPORT_ENV"


def stage_env() -> dict[str, str]:
    """The environment of a stage command a test starts: this process's, with the stage server's
    import-time variables (a test that wants others passes them on top, and its stages then run cold)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MLFLOW_DISABLE_TELEMETRY="true")
    # Stage tests check stage outputs; MLflow tracking has its own tests (tests/test_tracking.py).
    env.setdefault("SYNTH2_TRACKING", "0")
    served = env.pop(SERVER_IMPORT_ENV, None)
    if served is not None:
        since = import_time_env(env)
        env = {k: v for k, v in env.items() if k not in since} | json.loads(served)
    return env


def run_stage(name: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the stage in `cwd` as DVC would (`python -m synth2.launch NAME`: warm from the session's server)."""
    result = subprocess.run(
        [sys.executable, "-m", "synth2.launch", name, *args],
        cwd=cwd,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stage {name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


# The longest test files (measured under `make test`: the study's sweep, the real-weights pipeline, the
# coco pipeline, the fault tests, the forced and parallel re-runs) go first: pytest-xdist hands out files
# in collection order, and one of these started last would run alone at the end.
LONGEST_FIRST = (
    "test_study.py",
    "test_coco_real_weights.py",
    "test_reproduction.py",
    "test_failures.py",
    "test_coco_profile.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the files within a rank, and the tests within a file, keep their order


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The stages run on one thread (synth2.stage); tests of their models do too. On a busy 2-core
    machine a second thread made these tiny models several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stage_server_log(tmp_path_factory) -> Path:
    """What this test process's stage server (warm_stages) ran, one line per stage."""
    return tmp_path_factory.getbasetemp() / "stage_server.log"


@pytest.fixture(scope="session", autouse=True)
def warm_stages(tmp_path_factory):
    """A stage server for this test process (one per pytest-xdist worker): the stage commands the tests
    start through dvc.yaml's launcher (dvc repro, the flows, run_stage) fork from it instead of importing
    torch, transformers, diffusers and Great Expectations each, as the flow's stages do. The tests that
    compare with or need a cold start say so (`synth2.launch.without_server`,
    `tests.tiny_project.dvc(..., cold=True)`)."""
    from synth2 import stage_server

    environment = stage_env()
    with stage_server.running(stage_server_log(tmp_path_factory), environment) as env:
        os.environ.update(env)
        os.environ[SERVER_IMPORT_ENV] = json.dumps(import_time_env(environment))
        yield env
        for key in [*env, SERVER_IMPORT_ENV]:
            os.environ.pop(key, None)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty project workspace holding only a tiny params.yaml."""
    write_params(tmp_path)
    return tmp_path


# Real local services (MLflow server, Prefect server), shared by the test session; see tests/services.py.
from tests.services import mlflow_server, prefect_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, worker_id: str) -> Path:
    """The project on the tiny world, reproduced once by `dvc repro` (untracked, its stages warm: 41 s
    against 130 s cold, idle) and committed: tests read it; a test that changes it works on
    `tests.tiny_project.copy_project`. tests/test_reproduction.py re-runs every stage of it cold.

    Reproduced once per test run: under pytest-xdist the first worker to need it builds it in the run's
    shared temporary directory while the others wait on a file lock; each worker then reads its own copy,
    so two workers' DVC commands never meet on one repository lock."""
    from filelock import FileLock

    from tests.tiny_project import commit_all, copy_project, dvc, make_tiny_project, stages_run_cold

    reuse = os.environ.get("SYNTH2_TESTS_TINY_PIPELINE")  # development: a project reproduced by an earlier session
    if reuse:
        return copy_project(Path(reuse), tmp_path_factory.mktemp("tiny") / "project")
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    built, done = shared / "tiny-pipeline", shared / "tiny-pipeline.done"
    with FileLock(str(built) + ".lock"):
        if not done.is_file():
            root = make_tiny_project(built)
            result = dvc(root, "repro", SYNTH2_TRACKING="0")
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            # Warm, every stage: tests/test_reproduction.py compares its cold re-run with these outputs.
            assert not stages_run_cold(root, stage_server_log(tmp_path_factory).read_text())
            commit_all(root, "tiny pipeline reproduced")
            done.touch()
    return copy_project(built, tmp_path_factory.mktemp("tiny") / "project")
