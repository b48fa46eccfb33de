"""Write a .env for docker compose from .env.example: the host user's UID/GID and fresh random secrets.

    python3 docker/make_env.py .env.example > .env      (what `make env` runs, with umask 077)

Only values the example leaves empty are filled; every other line is copied as it is. The secrets
are URL-safe (letters, digits, - and _), so they need no quoting in .env; a password you choose
yourself may contain anything (the services URL-encode it), in single quotes if it holds $, # or spaces.
"""

from __future__ import annotations

import os
import secrets
import sys

FILL = {
    "HOST_UID": lambda: str(os.getuid()),
    "HOST_GID": lambda: str(os.getgid()),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(32),
    "PREFECT_API_AUTH_STRING": lambda: "synth2:" + secrets.token_urlsafe(32),
}


def filled(example: str) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value == "" and key in FILL:
            line = f"{key}={FILL[key]()}"
        lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(filled(f.read()))
