"""The warm stage server (synth2.stage_server) and dvc.yaml's launcher (synth2.launch), as DVC runs them.

A real server, real `python -m synth2.launch` processes. That a warm pipeline writes the cold pipeline's
bytes is tests/test_reproduction.py's parallel-flow test (the flow runs every stage warm).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from synth2 import stage_server
from synth2.launch import ENV_SOCKET, without_server
from tests.conftest import ROOT, stage_env


def launch(cwd: Path, *args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    environment = without_server(stage_env()) | {"PYTHONPATH": str(ROOT / "src")} | env
    return subprocess.Popen(
        [sys.executable, "-m", "synth2.launch", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[dict[str, str], Path]:
    """(the environment that sends stages to a running server, the server's log)."""
    log = tmp_path_factory.mktemp("server") / "stage_server.log"
    with stage_server.running(log, stage_env()) as env:
        assert env[ENV_SOCKET]
        yield env, log


def served(log: Path) -> str:
    return log.read_text()


def test_a_stage_runs_forked_from_the_server_with_the_launchers_directory_and_output(server, workspace: Path):
    env, log = server
    done = launch(workspace, "check_params", env=env)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "check_params done" in err  # the stage's own log, on the launcher's stderr
    assert (workspace / "reports" / "params_check.json").is_file()  # written in the launcher's directory
    assert "synth2.stages.check_params (pid" in served(log) and str(workspace) in served(log)
    # Launched as the server started (as the flow launches check_params): served between two of its
    # imports, not after all of them.
    deadline = time.monotonic() + 120
    while "preloaded" not in served(log) and time.monotonic() < deadline:
        time.sleep(0.5)
    lines = served(log).splitlines()
    stage = next(i for i, line in enumerate(lines) if "synth2.stages.check_params (pid" in line)
    preloaded = next(i for i, line in enumerate(lines) if "preloaded" in line)
    assert stage < preloaded, served(log)


def test_a_failing_stage_fails_warm_as_it_fails_cold(server, workspace: Path):
    env, log = server
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["balance"]["target_size"] = -3
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    results = {}
    for how, extra in (("warm", env), ("cold", {})):
        done = launch(workspace, "check_params", env=extra)
        _out, err = done.communicate(timeout=300)
        results[how] = (done.returncode, [line for line in err.splitlines() if line.startswith("error:")])
    assert results["warm"] == results["cold"]
    status, errors = results["warm"]
    assert status == 1 and len(errors) == 1 and "'balance.target_size': -3" in errors[0]
    assert "synth2.stages.check_params (pid" in served(log) and "exit status 1" in served(log)


def test_an_environment_the_server_was_not_started_with_runs_the_stage_cold(server, workspace: Path):
    env, log = server
    other = os.environ.get("HF_HUB_OFFLINE", "1") + "0"  # read by huggingface_hub when imported
    done = launch(workspace, "check_params", env=env | {"HF_HUB_OFFLINE": other})
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "refused synth2.stages.check_params" in err and "HF_HUB_OFFLINE" in err and "runs cold" in err
    assert (workspace / "reports" / "params_check.json").is_file()


def test_a_launcher_stopped_or_killed_stops_its_stage(server, tmp_path: Path):
    """SIGTERM (DVC, the flow, Ctrl-C's SIGINT alike) reaches the forked stage and the launcher exits
    with its status; a launcher killed outright leaves no stage running on."""
    env, log = server
    # `python -m http.server` stands in for a long stage: it serves until a signal stops it.
    script = "import sys; from synth2.launch import run_warm; sys.exit(run_warm('http.server', ['0']))"
    seen: set[int] = set()
    for how in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=without_server(stage_env()) | {"PYTHONPATH": str(ROOT / "src")} | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = _wait_for_new_pid(log, "http.server 0", seen)
        proc.send_signal(how)
        proc.wait(timeout=60)
        if how == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM  # the stage's own status, through the launcher
        _wait_gone(pid)


def test_the_server_stops_with_its_owner_and_a_launcher_then_runs_cold(workspace: Path, tmp_path: Path):
    with stage_server.running(tmp_path / "log", stage_env()) as env:
        socket_path = Path(env[ENV_SOCKET])
        assert socket_path.exists()
    assert not socket_path.exists()  # stopped, its directory gone
    done = launch(workspace, "check_params", env=env)
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "refused" not in err and (workspace / "reports" / "params_check.json").is_file()
    assert "stopped after" in (tmp_path / "log").read_text()


def _wait_for_new_pid(log: Path, what: str, seen: set[int]) -> int:
    """The pid of the first process the server started for `what` that is not in `seen` (added to it)."""
    deadline = time.monotonic() + 300  # the module's first launcher waits for the server's imports
    while time.monotonic() < deadline:
        for line in served(log).splitlines():
            if f"{what} (pid " in line and " in " in line:  # the line of its start
                pid = int(line.split(f"{what} (pid ")[1].split(")")[0])
                if pid not in seen:
                    seen.add(pid)
                    return pid
        time.sleep(0.2)
    raise AssertionError(f"the server never started {what}:\n{served(log)}")


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"stage process {pid} still running after its launcher stopped")
