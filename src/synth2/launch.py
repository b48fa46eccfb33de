"""`python -m synth2.launch STAGE [ARGS]`: run `python -m synth2.stages.STAGE ARGS`, warm when it can.

dvc.yaml's commands. When a warm stage server is up (synth2.stage_server; the flow starts one for the
stages it runs and puts its socket in SYNTH2_STAGE_SERVER), the stage runs in a process forked from it,
with torch, transformers, diffusers and Great Expectations already imported: the 4-9 s a stage spent
importing them (benchmarks/bench_stage_startup.py) is paid once per flow run instead of once per stage.
Otherwise (a bare `dvc repro`, a `dvc exp run`, no server, or one that refuses) the stage runs right here,
exactly as `python -m synth2.stages.STAGE` would. Either way DVC runs this command, waits for its exit
status and hashes the outputs the stage wrote: DVC's model of a stage is unchanged.

This module imports only the standard library: it is what every stage pays before the server takes over.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import sys
from collections.abc import Mapping

ENV_SOCKET = "SYNTH2_STAGE_SERVER"
# Environment variables that the server's preloaded libraries read when they are imported (offline mode,
# thread counts, caches, Python's own switches). A stage whose values differ from the server's would run
# with the server's, so the server refuses it and it runs cold. PYTHONPATH is not compared: the stage's
# sys.path travels with the request.
IMPORT_TIME_ENV = (
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "TORCH",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "KMP_",
    "CUDA_",
    "TOKENIZERS_",
    "GX_",
    "OPENBLAS_",
    "ARROW_",
    "PYTHON",
)


def without_server(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without a stage server's address: the stages it runs start cold, each importing its own."""
    return {k: v for k, v in environ.items() if k != ENV_SOCKET}


def import_time_env(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(IMPORT_TIME_ENV) and k != "PYTHONPATH"}


def stage_module(stage: str) -> str:
    return f"synth2.stages.{stage}"


def run_cold(module: str, args: list[str]) -> None:
    """Run the stage module in this process, as `python -m MODULE ARGS` would."""
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_warm(module: str, args: list[str]) -> int | None:
    """The stage's exit status, run in a process forked from the warm server; None when there is no
    server to run it (then the caller runs it cold)."""
    path = os.environ.get(ENV_SOCKET)
    if not path:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:  # the server has gone (its flow ended): nothing is lost by running cold
        connection.close()
        return None
    environ = without_server(os.environ)  # its own stages never call back
    request = {
        "module": module,
        "args": args,
        "cwd": os.getcwd(),
        "env": environ,
        "path": sys.path,
        "executable": sys.executable,
    }
    # The stage writes straight to this process's stdin, stdout and stderr (DVC's pipes, a terminal).
    socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    replies = connection.makefile("rb")
    reply = json.loads(replies.readline() or b'{"refused": "the server closed the connection"}')
    if "refused" in reply:
        print(f"synth2.launch: the stage server refused {module} ({reply['refused']}); it runs cold", file=sys.stderr)
        connection.close()
        return None

    def forward(signum: int, _frame) -> None:  # Ctrl-C, DVC or the flow stopping: the stage gets the signal
        connection.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    line = replies.readline()
    if not line:
        print(f"synth2.launch: the stage server stopped while {module} ran (pid {reply['pid']})", file=sys.stderr)
        return 1
    return int(json.loads(line)["status"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m synth2.launch STAGE [ARGS]  (runs python -m synth2.stages.STAGE ARGS)", file=sys.stderr)
        return 2
    module = stage_module(args[0])
    status = run_warm(module, args[1:])
    if status is None:
        run_cold(module, args[1:])
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
