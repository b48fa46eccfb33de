"""The warm stage server: the stages' libraries imported once, each stage forked from it (synth2.launch).

    python -m synth2.stage_server SOCKET    # what `running()` starts; it stops when its stdin closes

A stage spends 4-9 s importing torch, transformers, diffusers and Great Expectations before its first line
of work (benchmarks/bench_stage_startup.py), and a pipeline runs 17 of them. The server imports those
libraries once, then, for each `python -m synth2.launch STAGE` that connects, forks a child that takes the
launcher's stdin/stdout/stderr (passed over the Unix socket), working directory, environment, sys.path and
arguments, and runs `synth2.stages.STAGE` as `__main__`; the launcher exits with the child's status. While
it starts, it serves launchers between two imports (the child imports the rest itself, as cold).

What makes a forked stage the same as a cold one:
* Only third-party libraries are preloaded, never synth2: the child drops any synth2 module and imports
  the launcher's own src/ (the code DVC hashed, a `dvc exp run`'s copy included).
* The server computes nothing and runs no Python thread, so no RNG, torch thread pool or device is set up
  before the stage seeds and sets them itself (synth2.stage). The native threads two libraries start at
  import (OpenBLAS's pool with numpy, Arrow's jemalloc) are remade in the child by their own at-fork
  handlers, as for the workers torch's DataLoader forks.
* Environment variables the libraries read at import (synth2.launch.IMPORT_TIME_ENV) must match the
  server's, and the interpreter must be the same; otherwise the server refuses and the stage runs cold.
* The socket lives in a 0700 directory: only this user can ask the server to run code.
Outputs are byte-identical warm or cold (tests/test_reproduction.py: every stage of the tiny pipeline
re-run cold against its warm `dvc repro`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from synth2.launch import ENV_SOCKET, import_time_env, without_server

# What the stages import that costs start-up time (python -X importtime on each stage): modelling code of
# transformers and diffusers (which pull in torch._dynamo, torch.distributed.tensor, sympy, scipy), Great
# Expectations (pydantic models by the hundred), torch, pandas, pyarrow, DVC. A module missing here costs
# the stage its import time, never correctness; none of them starts a Python thread when imported.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "yaml",
    "pydantic",
    "PIL.Image",
    "torch",
    "safetensors.torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.gpt2.modeling_gpt2",
    "diffusers",
    "diffusers.models.modeling_utils",
    "diffusers.models.unets.unet_2d",
    "diffusers.schedulers",
    "diffusers.schedulers.scheduling_ddim",
    "diffusers.schedulers.scheduling_ddpm",
    "great_expectations",
    "scipy.stats",
    # The stage's tracking reads its DVC stage and hashes (synth2.tracking.lineage).
    "dvc.repo",
    "dvc.repo.stage",
    "dvc_data.hashfile.build",
    "psutil",
)
READY = "ready"
MID_PRELOAD_STAGES = max(1, (os.cpu_count() or 2) - 1)  # stages run beside the preload (see serve)


def preload(name: str) -> None:
    with contextlib.suppress(ImportError):
        importlib.import_module(name)


def refusal(request: dict, ours: dict[str, str]) -> str | None:
    """Why the server cannot run this request as it would run cold (None: it can). `ours`: the server's
    import-time environment as it started (the libraries then add their own, e.g. TORCHINDUCTOR_CACHE_DIR)."""
    if request.get("executable") != sys.executable:
        return f"it runs {request.get('executable')}, the server {sys.executable}"
    theirs = import_time_env(request.get("env", {}))
    differing = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if differing:
        return f"environment differs from the server's in {', '.join(differing)}"
    return None


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    connection.settimeout(10)
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 16, 3)
    while not data.endswith(b"\n"):
        more = connection.recv(1 << 16)
        if not more:
            raise ConnectionError("the launcher closed the connection mid-request")
        data += more
    connection.settimeout(None)
    return json.loads(data), fds


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} stage server: {line}", file=sys.stderr, flush=True)


def _send(connection: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):  # a launcher that has gone needs no answer
        connection.sendall(json.dumps(message).encode() + b"\n")


def serve(path: str) -> tuple[dict, list[int]] | None:
    """Accept launchers until stdin closes (None). Returns only in a forked child: its request and the
    launcher's stdin, stdout and stderr, every server resource closed."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print(READY, flush=True)
    environment = import_time_env(os.environ)
    # Preloading takes 10-20 s, and the flow's first stage (check_params) needs none of it: requests are
    # served between two imports, the child importing what is not loaded yet itself, as it would cold.
    # Only as many at once as leave the preload a core: the parallel flow starts three stages after
    # prepare, and each importing torch and transformers beside the server made all of them slower.
    unloaded, preload_started = list(PRELOAD), time.perf_counter()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("accept",))
    selector.register(sys.stdin, selectors.EVENT_READ, ("owner",))
    running: dict[int, tuple[int, socket.socket]] = {}  # pid -> (pidfd, launcher connection)
    started: dict[int, tuple[str, float]] = {}  # pid -> (what it runs, when it started): the log's lines

    def close_all() -> None:
        for pidfd, connection in running.values():
            os.close(pidfd)
            connection.close()
        selector.close()
        listener.close()

    while True:
        for key, _events in selector.select(timeout=0 if unloaded else None):
            kind, *rest = key.data
            if kind == "owner":
                if os.read(sys.stdin.fileno(), 4096):
                    continue
                for pid in running:  # the flow has gone: so have the launchers waiting on these
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                for pid in list(running):
                    os.waitpid(pid, 0)
                close_all()
                return None
            if kind == "accept":
                if unloaded and len(running) >= MID_PRELOAD_STAGES:
                    continue  # it waits in the listen queue until a stage ends or the preload does
                connection, _ = listener.accept()
                try:
                    request, fds = _receive(connection)
                except (OSError, ValueError) as exc:
                    _send(connection, {"refused": f"unreadable request: {exc}"})
                    connection.close()
                    continue
                reason = refusal(request, environment) if len(fds) == 3 else "stdin, stdout and stderr were not passed"
                if reason:
                    _log(f"refused {request.get('module')}: {reason}")
                    _send(connection, {"refused": reason})
                    for fd in fds:
                        os.close(fd)
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    connection.close()
                    close_all()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pid] = (pidfd, connection)
                _send(connection, {"pid": pid})
                started[pid] = (" ".join([request["module"], *request["args"]]), time.perf_counter())
                _log(f"{started[pid][0]} (pid {pid}) in {request['cwd']}")
                selector.register(pidfd, selectors.EVENT_READ, ("exit", pid))
                selector.register(connection, selectors.EVENT_READ, ("launcher", pid))
            elif kind == "exit":
                (pid,) = rest
                _pid, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                pidfd, connection = running.pop(pid)
                selector.unregister(pidfd)
                os.close(pidfd)
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(connection)
                _send(connection, {"status": code if code >= 0 else 128 - code})  # -N: killed by signal N
                what, since = started.pop(pid)
                _log(f"{what} (pid {pid}) exit status {code} after {time.perf_counter() - since:.1f} s")
                connection.close()
            elif kind == "launcher":
                (pid,) = rest
                connection = key.fileobj
                try:
                    data = connection.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the launcher was killed outright: its stage stops too
                    selector.unregister(connection)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                    continue
                for line in data.splitlines():
                    with contextlib.suppress(ValueError, KeyError, ProcessLookupError):
                        os.kill(pid, int(json.loads(line)["signal"]))
        if unloaded:
            preload(unloaded.pop(0))
            if not unloaded:
                _log(f"preloaded {len(PRELOAD)} modules in {time.perf_counter() - preload_started:.1f} s")


def become_stage(request: dict, fds: list[int]) -> None:
    """In the forked child: take the launcher's place and run its stage as `__main__`."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as Python sets it up for the launcher's stdout
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    for name in [m for m in sys.modules if m == "synth2" or m.startswith("synth2.")]:
        del sys.modules[name]  # the launcher's src/ is the code to run, not the one the server started from
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


@contextlib.contextmanager
def running(log: Path | None = None, environ: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A warm stage server for the length of the block; yields the environment that sends stages to it
    ({} when it could not start: the stages then run cold). `environ`: the environment the stages will
    have (default: this process's), which the server starts with; what it ran and its errors go to `log`."""
    directory = tempfile.mkdtemp(prefix="synth2-stages-")  # 0700; short enough for a socket's path
    path = os.path.join(directory, "socket")
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    errors = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "synth2.stage_server", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        env=without_server(os.environ if environ is None else environ),
    )
    try:
        ready = server.stdout.readline().decode().strip() == READY
        yield {ENV_SOCKET: path} if ready else {}
    finally:
        server.stdin.close()  # the server's signal to stop
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        if log:
            errors.close()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m synth2.stage_server SOCKET", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the flow; it closes our stdin
    started = time.perf_counter()
    child = serve(args[0])
    if child is None:
        _log(f"stopped after {time.perf_counter() - started:.0f} s")
        return 0
    become_stage(*child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
