"""docker-compose.yml as Docker Compose reads it, and its services as local processes.

There is no Docker engine on our machines. The tests take each service's command, environment, user
and healthcheck from the compose file, after Compose's variable interpolation from an env file, and
run them natively: the other containers' addresses become 127.0.0.1 and free ports, the paths of a
container (/app, /home/synth2, ...) become directories of the test, and the image's environment comes
from the ENV lines of docker/Dockerfile. So the file and its tests cannot drift apart.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

# Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
# ${VAR?error}, ${VAR:+alternative}, ${VAR+alternative}.
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>\w+))")


class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty: Compose stops with the message."""


def interpolate(text: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"] or match["bare"], match["op"] or "", match["arg"] or ""
        value = env.get(name)
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if missing else value
        if op.endswith("?"):
            if missing:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return value
        if op.endswith("+"):
            return "" if missing else arg
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def read_env_file(text: str) -> dict[str, str]:
    """An .env file's values as Compose reads them (single quotes literal, ` #` starts a comment)."""
    return {key: value or "" for key, value in dotenv_values(stream=io.StringIO(text), interpolate=False).items()}


def load_compose(env: dict[str, str]) -> dict:
    """The compose file with every variable substituted from `env` (raises MissingVariable)."""
    return _interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def image_environment() -> dict[str, str]:
    """The ENV lines of docker/Dockerfile."""
    env: dict[str, str] = {}
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            env.update(token.split("=", 1) for token in shlex.split(line[4:]))
    return env


def localize(text: str, names: dict[str, str]) -> str:
    """`text` with each container-side name (an address such as "postgres:5432", a path such as
    "/app") replaced by its native counterpart, and the all-interfaces address by loopback."""
    for container, native in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(container, native)
    return text.replace("0.0.0.0", "127.0.0.1")


def localized(env: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    return {key: localize(value, names) for key, value in env.items()}


def native_environment(service: dict, names: dict[str, str]) -> dict[str, str]:
    """A service's `environment`, localized; a HOST/PORT pair of variables counts as one address."""
    env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
    for key in [k for k in env if k.endswith("_HOST")]:
        port_key = key.removesuffix("_HOST") + "_PORT"
        address = names.get(f"{env[key]}:{env.get(port_key)}")
        if address:
            env[key], env[port_key] = address.rsplit(":", 1)
    return {key: localize(value, names) for key, value in env.items()}


def native_command(argv: list[str] | str, names: dict[str, str], own_port: tuple[str, str] | None = None) -> list[str]:
    """A service's command, localized; `own_port` (container port, native port) moves `--port`."""
    args = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if own_port:
        container, native = own_port
        args = [f"--port={native}" if a == f"--port={container}" else a for a in args]
        args = [native if a == container and i and args[i - 1] == "--port" else a for i, a in enumerate(args)]
    return [localize(a, names) for a in args]


def healthcheck_command(service: dict, names: dict[str, str]) -> list[str]:
    test = service["healthcheck"]["test"]
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    return [localize(a, names) for a in argv]


def published_port(service: dict) -> tuple[str, str]:
    """(host port, container port) of the service's one published port, which must be on 127.0.0.1."""
    (mapping,) = service["ports"]
    address, host_port, container_port = mapping.split(":")
    assert address == "127.0.0.1", mapping
    return host_port, container_port


def user_ids(service: dict) -> tuple[int, int]:
    uid, gid = service["user"].split(":")
    return int(uid), int(gid)
