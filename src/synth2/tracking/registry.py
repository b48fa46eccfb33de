"""Models and datasets in MLflow, as the sync (synth2.tracking.sync) writes them.

A model is logged as a pyfunc "model from code" (saved_model.py) carrying its `save_pretrained`
directory as an artifact: no pickling, no torch.export, no input example. It is tagged with the
directory's DVC md5, so the registry keeps one version per content and a registered version can be
traced back to the DVC out it came from. `promote_best` registers the VLM variants and moves the
`champion` alias to the best one only on evidence over validation images (champion.py).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

TAG_MODEL_MD5 = "synth2.dvc_md5"  # on logged models: the DVC md5 of the directory they were logged from


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "transformers", "diffusers", "safetensors", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{package}=={version(package).split('+')[0]}")
    return pins


def log_model(client, run_id: str, directory: Path, name: str, md5: str | None) -> str:
    """Log the model directory to the run; its URI (`models:/m-…`).

    `mlflow.pyfunc.load_model(uri).unwrap_python_model().load()` gives the directory back.
    """
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    with warnings.catch_warnings():
        # The pyfunc wraps a directory; MLflow's advice to add predict() type hints does not apply.
        warnings.simplefilter("ignore", UserWarning)
        # The fluent API is the one log_model writes through. Ending the run marks it FINISHED for a
        # moment: its own close event, replayed after this one, sets its real status and end time.
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(Path(__file__).with_name("saved_model.py")),
                artifacts={"model_dir": str(directory)},
                pip_requirements=_pip_requirements(),
                tags={TAG_MODEL_MD5: md5} if md5 else None,
            )
    return info.model_uri


def log_dataset(client, run_id: str, path: Path, name: str, context: str, digest: str | None) -> None:
    """Record `path` as an input dataset of the run, its DVC md5 as the digest."""
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    if digest is None:
        return
    # MLflow registers the local source class twice; resolving a path by URI would warn about it.
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    dataset = MetaDataset(source=local(Path(path).resolve().as_uri()), name=name, digest=digest)
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    client.log_inputs(run_id, datasets=[entity])


def _logged_model_uri(client, run_id: str, experiment_id: str, directory: Path, md5: str | None) -> str:
    """The logged model with this DVC md5 (this run's first), logging the directory when there is none
    (e.g. DVC restored the model from its cache, so no stage trained and logged it)."""
    import mlflow

    if md5:
        mlflow.set_tracking_uri(client.tracking_uri)
        found = mlflow.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"tags.`{TAG_MODEL_MD5}` = '{md5}'",
            max_results=100,
            output_format="list",
        )
        if found:
            own = [m for m in found if m.source_run_id == run_id]
            return (own or found)[0].model_uri
    return log_model(client, run_id, directory, directory.name, md5)


def register(client, model_uri: str, registered_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Register `model_uri`; the same model, or the same bytes (DVC md5), keeps its version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.create_registered_model(registered_name)
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    md5 = client.get_logged_model(model_id).tags.get(TAG_MODEL_MD5) if model_id else None
    for version in client.search_model_versions(f"name = '{registered_name}'"):
        same_model = version.source == model_uri or (model_id and getattr(version, "model_id", None) == model_id)
        if same_model or (md5 and version.tags.get(TAG_MODEL_MD5) == md5):
            break
    else:
        mlflow.set_tracking_uri(client.tracking_uri)
        version = mlflow.register_model(model_uri, registered_name, tags={TAG_MODEL_MD5: md5} if md5 else None)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(registered_name, version.version, key, str(value))
    return str(version.version)


def promote_best(
    client,
    run_id: str,
    experiment_id: str,
    models: Mapping[str, tuple[Path, str | None]],
    scores: Mapping[str, float],
    metric: str,
    registered_name: str,
    alias: str = "champion",
    evidence: Mapping | None = None,
) -> dict[str, str]:
    """Register every variant ({variant: (directory, md5)}) and point `alias` at the best-scoring one when
    the evidence says it beats the current holder (synth2.tracking.champion); {variant: version}.

    `evidence`: {"metric", "validation_set" (md5 of the validation table), "scores": {variant: {image id:
    value}}}, logged to the run as champion/validation_scores.json before any version points at it."""
    from mlflow.exceptions import MlflowException

    from synth2.tracking import champion

    try:
        current = client.get_model_version_by_alias(registered_name, alias)
    except MlflowException:  # no such model or alias yet
        current = None
    tags: dict[str, str] = {}
    if evidence:
        client.log_dict(run_id, dict(evidence), champion.SCORES_ARTIFACT)
        tags[champion.TAG_SCORES_RUN] = run_id
    versions = {
        variant: register(
            client,
            _logged_model_uri(client, run_id, experiment_id, directory, md5),
            registered_name,
            {champion.TAG_VARIANT: variant, metric: scores.get(variant, "n/a"), **tags},
        )
        for variant, (directory, md5) in models.items()
    }
    ranked = [v for v in versions if v in scores and math.isfinite(scores[v])]
    if not ranked:
        return versions
    best = max(ranked, key=lambda v: (scores[v], v))  # ties as evaluate breaks them (choose_champion)
    decision = champion.decide(client, registered_name, current, versions, best, evidence)
    if decision.moves:
        client.set_registered_model_alias(registered_name, alias, versions[best])
    holder = next((v for v in versions if versions[v] == decision.holder), None)
    client.set_tag(run_id, f"synth2.{alias}", f"v{decision.holder}" + (f" ({holder} of this run)" if holder else ""))
    client.set_tag(run_id, f"synth2.{alias}.moved", str(decision.moves).lower())
    client.set_tag(run_id, f"synth2.{alias}.reason", decision.reason)
    for key, value in decision.metrics(metric).items():
        client.log_metric(run_id, key, value)
    champion.log.info("%s: %s", alias, decision.reason)
    return versions
