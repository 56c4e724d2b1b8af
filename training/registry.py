"""MLflow tracking and registry helpers: one experiment and one registered model per family.

Aliases `champion` and `challenger` replace the deprecated stages. MLflow keeps no history of
alias moves; callers record each move in the alias audit trail (see pipelines.models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from contracts import ALIASES, model_name
from training.bundle import Bundle, EnsembleBundle, load_folder

MLRUNS = Path("mlruns")
ARTIFACT_ROOT_ENV = "STOCKCOPILOT_ARTIFACT_ROOT"  # where embedded experiments keep artefacts
SERVER_SCHEMES = ("http://", "https://")


def is_server(tracking_uri: str) -> bool:
    """Whether the URI names an MLflow tracking server (`mlflow server`, shared by a team) rather
    than a store this process opens itself (the embedded sqlite file under mlruns/)."""
    return tracking_uri.startswith(SERVER_SCHEMES)


def configure(tracking_uri: str, artifact_root: Path = MLRUNS / "artifacts") -> MlflowClient:
    """Point MLflow's tracking and registry at `tracking_uri`, telemetry off.

    Embedded (sqlite): the store's folder is created and new experiments keep their artefacts
    under `artifact_root`. A tracking server owns both its store and its artefact root, so
    against http(s) nothing local is created and `artifact_root` is unused.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if not is_server(tracking_uri):
        os.environ[ARTIFACT_ROOT_ENV] = str(artifact_root.resolve())
    return MlflowClient(tracking_uri, tracking_uri)


def experiment(family: str) -> str:
    """Create (once) and select the family's experiment; returns its id.

    Against a tracking server the experiment takes the server's default artifact root (with
    `--serve-artifacts`, `mlflow-artifacts:/`): clients upload through the server, which alone
    holds the object-store credentials. A local `file:` location there would name a folder
    on whichever machine happened to create the experiment.
    """
    name = model_name(family)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    if is_server(mlflow.get_tracking_uri()):
        exp_id = mlflow.create_experiment(name)
    else:
        root = Path(os.environ.get(ARTIFACT_ROOT_ENV, MLRUNS / "artifacts")) / family
        exp_id = mlflow.create_experiment(name, artifact_location=root.resolve().as_uri())
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def log_bundle(bundle: Bundle, directory: Path) -> str:
    """Log the bundle as a pyfunc model inside the active run; returns the model URI."""
    from training.pyfunc import EnsembleModel, ForecasterModel

    python_model = EnsembleModel() if isinstance(bundle, EnsembleBundle) else ForecasterModel()
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts={"bundle": str(bundle.save(directory))},
        pip_requirements=["stock-copilot"],
    )
    return info.model_uri


@dataclass(frozen=True)
class VersionInfo:
    family: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    created: int


def register(model_uri: str, family: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model as a new version of the family's registered model."""
    version = mlflow.register_model(model_uri, model_name(family), tags=tags or {})
    return str(version.version)


def alias_version(client: MlflowClient, family: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name(family), alias).version)
    except MlflowException:
        return None


def set_alias(client: MlflowClient, family: str, alias: str, version: str) -> None:
    if alias not in ALIASES:
        raise ValueError(f"alias must be one of {ALIASES}")
    client.get_model_version(model_name(family), version)  # raises if the version is unknown
    client.set_registered_model_alias(model_name(family), alias, version)


def versions(client: MlflowClient, family: str) -> list[VersionInfo]:
    """All versions of a family, newest first, with aliases and the run's headline metrics."""
    try:
        found = client.search_model_versions(f"name='{model_name(family)}'")
        aliases = client.get_registered_model(model_name(family)).aliases or {}
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for v in sorted(found, key=lambda v: int(v.version), reverse=True):
        metrics: dict[str, Any] = {}
        if v.run_id:
            try:
                metrics = client.get_run(v.run_id).data.metrics
            except MlflowException:
                metrics = {}
        out.append(
            VersionInfo(
                family,
                str(v.version),
                v.run_id,
                tuple(sorted(by_version.get(str(v.version), []))),
                dict(metrics),
                int(v.creation_timestamp or 0),
            )
        )
    return out


def load_bundle(uri: str) -> Bundle:
    """Load a registered model (e.g. `models:/stockcopilot-lstm@champion`) as its bundle.

    Reads the bundle folder straight from the model's artefacts rather than through
    `mlflow.pyfunc.load_model`: nothing is unpickled, and an ensemble does not load its members
    (the ensemble deployment gets member predictions from the member deployments), so a process
    serving only the ensemble never imports torch.
    """
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    directory = local / flavor["artifacts"]["bundle"]["path"]
    return load_folder(directory)
