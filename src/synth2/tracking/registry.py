"""Models in MLflow: logged from their saved directories (no pickling), registered, and the champion aliased.

A model is logged as a pyfunc "model from code" (saved_model.py) carrying its `save_pretrained`
directory as an artifact, tagged with the directory's DVC md5, so the registry keeps one version per
content and a logged model can be traced back to the DVC out it came from.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synth2.tracking.lineage import dvc_md5
from synth2.tracking.runs import active_run, guarded

TAG_MODEL_MD5 = "synth2.dvc_md5"  # on logged models: the DVC md5 of the directory they were logged from


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "transformers", "diffusers", "safetensors", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{package}=={version(package).split('+')[0]}")
    return pins


@guarded
def log_model(
    model: Any,
    name: str,
    registered_name: str | None = None,
    loader: str | None = None,
) -> str | None:
    """Log a model and return its URI (`models:/m-…`), registering it under `registered_name` if given.

    `model` is a `save_pretrained` directory, or an object with `save_pretrained` (transformers,
    diffusers), or any `torch.nn.Module` (its state dict is saved as safetensors). It is logged as a
    pyfunc "model from code" (src/synth2/tracking_model.py) carrying the directory as an artifact:
    no pickling, no torch.export, no input example needed. `loader` ("module:callable") is what
    `mlflow.pyfunc.load_model(uri).unwrap_python_model().load()` calls on the directory.
    """
    import warnings

    import mlflow

    with tempfile.TemporaryDirectory(prefix="synth2-model-") as tmp, warnings.catch_warnings():
        # The pyfunc wraps a directory; MLflow's advice to add predict() type hints does not apply.
        warnings.simplefilter("ignore", UserWarning)
        directory = _as_directory(model, Path(tmp) / name)
        md5 = dvc_md5(directory) if Path(directory).resolve().is_relative_to(Path.cwd()) else None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("saved_model.py")),
            artifacts={"model_dir": str(directory)},
            model_config={"loader": loader} if loader else None,
            pip_requirements=_pip_requirements(),
            tags={TAG_MODEL_MD5: md5} if md5 else None,
        )
    if registered_name:
        _register(info.model_uri, registered_name)
    return info.model_uri


def _as_directory(model: Any, target: Path) -> Path:
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist")
        return path
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(target)
        return target
    from safetensors.torch import save_file

    target.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(target / "model.safetensors"))
    (target / "module.txt").write_text(f"{type(model).__module__}.{type(model).__qualname__}\n")
    return target


def _resolve_model_uri(model: str | Path) -> str:
    """A model URI as is; a local directory -> the logged model with its DVC md5, logging it if none."""
    import mlflow

    if isinstance(model, str) and ":/" in model:
        return model
    run = active_run()
    md5 = dvc_md5(model)
    if md5 is None:
        raise FileNotFoundError(f"model directory {model} does not exist")
    found = mlflow.search_logged_models(
        experiment_ids=[run.experiment_id],
        filter_string=f"tags.`{TAG_MODEL_MD5}` = '{md5}'",
        max_results=100,
        output_format="list",
    )
    if found:
        # Same bytes may have been logged by earlier runs too: the lineage should point at this run's.
        own = [m for m in found if m.source_run_id == run.run_id]
        return (own or found)[0].model_uri
    # Logged by no earlier run (e.g. DVC restored the directory from its cache): log it now.
    return log_model(model, Path(model).name)


def _register(model_uri: str, registered_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Register `model_uri`; the same model, or the same bytes (DVC md5), keeps its version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = active_run().client
    with contextlib.suppress(MlflowException):
        client.create_registered_model(registered_name)
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    md5 = client.get_logged_model(model_id).tags.get(TAG_MODEL_MD5) if model_id else None
    for version in client.search_model_versions(f"name = '{registered_name}'"):
        same_model = version.source == model_uri or (model_id and getattr(version, "model_id", None) == model_id)
        if same_model or (md5 and version.tags.get(TAG_MODEL_MD5) == md5):
            break
    else:
        version = mlflow.register_model(model_uri, registered_name, tags={TAG_MODEL_MD5: md5} if md5 else None)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(registered_name, version.version, key, str(value))
    return str(version.version)


@guarded
def promote_best(
    variants: Mapping[str, str | Path],
    scores: Mapping[str, float],
    registered_name: str | None = None,
    alias: str = "champion",
    higher_is_better: bool = True,
) -> dict[str, str]:
    """Register every variant (model URI or directory) and alias the best-scoring one.

    evaluate calls `promote_best({v: paths.vlm_dir(v) for v in VLM_VARIANTS}, {v: score_v})` with the
    scores of `params.tracking.champion_metric`; returns {variant: version}.
    """
    run = active_run()
    name = registered_name or run.params.tracking.registered_model
    metric = run.params.tracking.champion_metric
    versions = {
        variant: _register(_resolve_model_uri(model), name, {"variant": variant, metric: scores.get(variant, "n/a")})
        for variant, model in variants.items()
    }
    ranked = [v for v in versions if v in scores and math.isfinite(scores[v])]
    if ranked:
        best = (max if higher_is_better else min)(ranked, key=lambda v: scores[v])
        run.client.set_registered_model_alias(name, alias, versions[best])
        run.client.set_tag(run.run_id, f"synth2.{alias}", f"{best} (v{versions[best]}, {metric}={scores[best]:.4g})")
    return versions
