"""Where MLflow records go: the switches, the store URI and experiment, and metric/param helpers."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

ENV_ENABLED = "SYNTH2_TRACKING"
ENV_STRICT = "SYNTH2_TRACKING_STRICT"
_METRIC_KEY_BAD = re.compile(r"[^\w\-. /]")


def enabled() -> bool:
    return os.environ.get(ENV_ENABLED, "1").strip().lower() not in {"0", "false", "off", "no"}


def strict() -> bool:
    """Tracking errors become exceptions (the tests set it); otherwise they never fail a stage."""
    return os.environ.get(ENV_STRICT, "0").strip().lower() in {"1", "true", "yes", "on"}


def project_root() -> Path:
    """The DVC project the tracking store belongs to.

    DVC sets DVC_ROOT for stage commands, and for `dvc exp run --temp` points it at the parent
    project rather than the temporary copy, so experiments land in the project's store.
    """
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def resolve_tracking_uri(configured: str, root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI wins; a relative sqlite path in params is made absolute against the root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return absolute_uri(configured, root)


def absolute_uri(uri: str, root: Path | None = None) -> str:
    """The same store named from any directory: a relative sqlite path (or a bare path, a sqlite
    database) made absolute against the root; other URIs as they are."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str((root or project_root()) / uri[len(prefix) :])
    if "://" not in uri:  # a bare path: a local sqlite database
        path = Path(uri)
        return prefix + str(path if path.is_absolute() else (root or project_root()) / path)
    return uri


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars stay values."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """Read `a.b.c` out of nested mappings (e.g. the champion metric out of metrics/evaluate.json)."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Flatten and keep numbers only (bools and strings are not metrics); make keys MLflow-legal."""
    out: dict[str, float] = {}
    for key, value in flatten(values).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[metric_key(key)] = float(value)
    return out


def metric_key(key: str) -> str:
    """An MLflow-legal metric name."""
    return _METRIC_KEY_BAD.sub("_", key)
