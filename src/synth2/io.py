"""Atomic writes and checked reads for stage inputs and outputs.

Every output is written to a temporary sibling and renamed into place, so a crash mid-write leaves the
previous output (or nothing) but never half a file. Inside `all_or_nothing()` (the stage frame opens one
around every stage body) the renames wait until the block ends: a stage that fails after writing some of
its outputs leaves all of them as they were (the stage frame also uses that to drop the writes of a
torchrun follower: synth2.stage). Every read of another stage's output names the stage to run first when
the input is missing or unreadable: the stage that writes the path, as the pipeline's description says
(synth2.pipeline.producer).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from synth2.errors import Synth2Error

T = TypeVar("T")


class MissingInputError(Synth2Error):
    """An input of a stage is missing or cannot be read."""


# (temporary directory, written path, final path) of the writes waiting for all_or_nothing() to end.
_pending: contextvars.ContextVar[list[tuple[Path, Path, Path]] | None] = contextvars.ContextVar(
    "synth2_pending_writes", default=None
)


def _replace(tmp_dir: Path, tmp: Path, final: Path) -> None:
    try:
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            os.replace(final, tmp_dir / (final.name + ".old"))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds
    (inside `all_or_nothing()`, only once that block succeeds too).

    Works for files and for directories (e.g. a `save_pretrained` target).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp} for {final}")
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    pending = _pending.get()
    if pending is None:
        _replace(tmp_dir, tmp, final)
    else:
        pending.append((tmp_dir, tmp, final))


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Writes inside the block land together when it succeeds, and not at all when it fails."""
    if _pending.get() is not None:  # nested: the outer block decides
        yield
        return
    pending: list[tuple[Path, Path, Path]] = []
    token = _pending.set(pending)
    try:
        yield
    except BaseException:
        for tmp_dir, _, _ in pending:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        _pending.reset(token)
    # Innermost writes first: a file written inside a directory that is itself written atomically.
    for tmp_dir, tmp, final in pending:
        _replace(tmp_dir, tmp, final)


@contextlib.contextmanager
def landing_now() -> Iterator[None]:
    """Writes inside the block land at once (each still atomic), even inside all_or_nothing(): for the
    evidence a failing stage leaves behind, e.g. a failed gate's report."""
    token = _pending.set(None)
    try:
        yield
    finally:
        _pending.reset(token)


def current_path(final: Path | str) -> Path:
    """Where `final`'s content is now: its written-but-not-yet-renamed copy inside all_or_nothing()."""
    final = Path(final)
    for _, tmp, pending_final in reversed(_pending.get() or []):
        if pending_final == final:
            return tmp
    return final


def write_parquet(df: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_tensors(tensors: dict[str, np.ndarray], path: Path | str, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _stage_of(path: Path) -> str | None:
    """The stage that writes `path` (relative, or absolute inside the working directory: the project),
    from the pipeline's description (imported on a failure only); None for a path no stage writes."""
    from synth2.pipeline import producer

    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return None
    try:
        return producer(path)
    except KeyError:
        return None


def _rerun(path: Path) -> str:
    stage = _stage_of(path)
    return f"dvc repro {stage}" if stage else "dvc repro"


def _require(path: Path) -> Path:
    if not path.exists():
        stage = _stage_of(path)
        first = f"the '{stage}' stage" if stage else "the stage that writes it"
        raise MissingInputError(f"{path} is missing: run {first} first ({_rerun(path)})")
    return path


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    path = _require(Path(path))
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise MissingInputError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); re-run '{_rerun(Path(path))}'"
        ) from None
    missing = [c for c in columns or [] if c not in df.columns]
    if missing:
        raise MissingInputError(f"{path} lacks columns {missing}; re-run '{_rerun(Path(path))}' to rebuild it")
    return df


def read_json(path: Path | str) -> Any:
    path = _require(Path(path))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MissingInputError(f"{path} is not valid JSON ({exc}); re-run '{_rerun(Path(path))}'") from None


def read_tensors(path: Path | str) -> dict[str, np.ndarray]:
    path = _require(Path(path))
    try:
        return load_file(str(path))
    except Exception as exc:
        raise MissingInputError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); re-run '{_rerun(Path(path))}'"
        ) from None


def require_rows(table: pd.DataFrame, path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """Stop before any work when a stage's input table is empty or has missing values where it needs them."""
    if table.empty:
        raise MissingInputError(f"{path} has no rows; re-run '{_rerun(Path(path))}' (and check its params)")
    for column in columns or []:
        missing = table[column].isna()
        if missing.any():
            rows = missing.to_numpy().nonzero()[0][:5].tolist()
            raise MissingInputError(
                f"{path}: {int(missing.sum())} of {len(table)} rows have no '{column}' (first rows {rows}); "
                f"re-run '{_rerun(Path(path))}' or fix its input"
            )
    return table


def load_output(path: Path | str, what: str, load: Callable[[], T]) -> T:
    """Load a saved model (or other output) of another stage; a corrupt one is one line naming it."""
    try:
        return load()
    except Synth2Error:
        raise
    except Exception as exc:  # safetensors, transformers and diffusers raise many types for a corrupt save
        detail = " ".join(str(exc).split())[:200]
        raise MissingInputError(
            f"{path} does not hold a loadable {what} ({type(exc).__name__}: {detail}); re-run '{_rerun(Path(path))}'"
        ) from None


def require_dir(path: Path | str) -> Path:
    """Check that a `save_pretrained` directory exists before loading from it."""
    path = _require(Path(path))
    if not path.is_dir():
        raise MissingInputError(f"{path} should be a directory; re-run '{_rerun(Path(path))}'")
    return path


def write_curve(history: list[tuple[int, float]], path: Path | str, value: str = "loss") -> None:
    """A training curve as CSV (`step,<value>`), the format `dvc plots` reads."""
    write_csv(pd.DataFrame(history, columns=["step", value]), path)


def write_csv(df: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def require_finite(array: np.ndarray, what: str) -> np.ndarray:
    """Stop the stage when a model produced NaN or inf: nothing downstream can use it."""
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise Synth2Error(
            f"{what}: {len(rows)} of {len(array)} rows are not finite (first rows {rows[:5].tolist()}); "
            "lower the learning rate or check the inputs"
        )
    return array
