"""`synth2 tracking relink`: point a moved or copied local store at the artifacts beside it.

A local store is a SQLite file with its artifacts in `mlartifacts/` next to it (the sync creates the
experiment so). MLflow writes absolute artifact URIs into the database: the experiment's location, and
from it every run's, logged model's and model version's, so a moved checkout's store still points at the
old directory (reading fails once it is gone; a copy reads and writes the original's artifacts). MLflow
has no call that changes a stored artifact location (mlflow/mlflow#3144, #8226 are open requests), so
this rewrites the prefix in those columns, named through MLflow's own table models, in one transaction.

The sync and `make ui` (synth2.tracking.ui) relink a store by themselves when its artifact directory is
beside it; the command does it by hand and says what it changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from synth2.errors import Synth2Error

log = logging.getLogger("synth2.tracking")
ARTIFACTS = "mlartifacts"
_SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store; None for any other store."""
    return Path(uri[len(_SQLITE) :]) if uri.startswith(_SQLITE) else None


def artifact_root(uri: str) -> str | None:
    """Where a local store keeps its artifacts (a file URI): `mlartifacts/` beside the database."""
    path = sqlite_path(uri)
    return (path.parent / ARTIFACTS).as_uri() if path is not None else None


def _columns():
    """(table model, column) of every stored artifact URI."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLoggedModel, SqlRun

    return [
        SqlExperiment.artifact_location,
        SqlRun.artifact_uri,
        SqlLoggedModel.artifact_location,
        SqlModelVersion.source,
        SqlModelVersion.storage_location,
    ]


@dataclass
class Relinked:
    uri: str
    new_root: str
    old_roots: list[str] = field(default_factory=list)
    rows: int = 0

    def line(self) -> str:
        if not self.old_roots:
            return f"{self.uri}: nothing to relink, its artifacts are under {self.new_root}"
        return f"{self.uri}: {self.rows} artifact location(s) moved from {', '.join(self.old_roots)} to {self.new_root}"


def stale_roots(uri: str) -> list[str]:
    """The artifact roots of another place (`…/mlartifacts` not beside the database) that the store's
    experiments point at; empty when none does, or when the store is not a local SQLite file."""
    new_root = artifact_root(uri)
    if new_root is None or not sqlite_path(uri).is_file():
        return []
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            locations = connection.execute(sqlalchemy.select(SqlExperiment.artifact_location)).scalars()
            return sorted({loc for loc in locations if _is_other_root(loc, new_root)})
    except sqlalchemy.exc.OperationalError:  # not an MLflow database (yet): nothing points anywhere
        return []
    finally:
        engine.dispose()


def _is_other_root(location: str | None, new_root: str) -> bool:
    return (
        bool(location)
        and location.startswith("file:///")
        and location.endswith("/" + ARTIFACTS)
        and (location != new_root)
    )


def relink(uri: str) -> Relinked:
    """Rewrite the store's artifact URIs under another place's `mlartifacts` to the one beside it.
    The directory beside it must exist: the store is moved or copied with its artifacts."""
    new_root = artifact_root(uri)
    if new_root is None:
        raise Synth2Error(f"{uri} is not a local SQLite store; only those keep their artifacts beside them")
    if not sqlite_path(uri).is_file():
        raise Synth2Error(f"{sqlite_path(uri)} does not exist; name the store with MLFLOW_TRACKING_URI")
    result = Relinked(uri, new_root, stale_roots(uri))
    if not result.old_roots:
        return result
    here = sqlite_path(uri).parent / ARTIFACTS
    if not here.is_dir():
        raise Synth2Error(
            f"{here} does not exist; move or copy the artifacts ({', '.join(result.old_roots)}) there first"
        )
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.begin() as connection:  # one transaction: all of it or nothing
            for old in result.old_roots:
                for column in _columns():
                    under = sqlalchemy.or_(column == old, column.startswith(old + "/", autoescape=True))
                    moved = sqlalchemy.literal(new_root) + sqlalchemy.func.substr(column, len(old) + 1)
                    update = sqlalchemy.update(column.class_).where(under).values({column.key: moved})
                    result.rows += connection.execute(update).rowcount
    finally:
        engine.dispose()
    return result


def project_store(root: Path, tracking_uri: str | None = None) -> str:
    """The store named by `tracking_uri`, else the one the stages record to (MLFLOW_TRACKING_URI, else
    params.yaml's tracking.tracking_uri), as an absolute URI."""
    from synth2.params import load_params
    from synth2.tracking.store import absolute_uri, resolve_tracking_uri

    if tracking_uri:
        return absolute_uri(tracking_uri, root)
    return resolve_tracking_uri(load_params(root / "params.yaml").tracking.tracking_uri, root)


def relink_command(tracking_uri: str | None) -> None:
    """`synth2 tracking relink [--tracking-uri URI]`, run in the project root."""
    from synth2.tracking.store import project_root

    print(relink(project_store(project_root(), tracking_uri)).line())


def relink_if_moved(uri: str) -> Relinked | None:
    """Relink a store whose experiments point at another place's artifacts when its own are beside it
    (a moved or copied checkout), and say so in one line; None when there was nothing to do."""
    path = sqlite_path(uri)
    if path is None or not (path.parent / ARTIFACTS).is_dir() or not stale_roots(uri):
        return None
    result = relink(uri)
    log.warning("tracking: the store moved; %s", result.line())
    return result
