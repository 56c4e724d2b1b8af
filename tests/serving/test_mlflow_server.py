"""MLflow for teams, end to end: a real `mlflow server` on its own Postgres database, with its
artefacts in an S3 bucket (moto's S3 server on loopback), and our code as its only client.

Training registers through the server's HTTP API, serving follows a promotion and a rollback
made through it, and the model files land in the bucket, uploaded through the server (the S3
endpoint and credentials are the server's alone), with nothing written locally. MLflow's
tracking URI is process-global, so every global this module changes is put back afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from api.settings import Settings
from contracts import CHALLENGER, CHAMPION, ForecastRequest, SeriesInput, model_name
from pipelines.models import connect, move_alias, register_trained, rollback
from serving.local import LocalPredictor
from tests.utils import TINY, eventually
from training import registry

BUCKET = "stockcopilot-mlflow"
PREFIX = "artifacts"  # --artifacts-destination s3://BUCKET/PREFIX
TICKERS = ("KO",)
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
MLFLOW_GLOBALS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
STARTUP_S = 180  # a generous bound: the server migrates a fresh database before /health


@dataclass(frozen=True)
class Team:
    """The server as its users see it, and the bucket behind it."""

    uri: str
    client: MlflowClient
    s3: Any  # boto3's S3 client of the bucket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[tuple[str, Any]]:
    """moto's S3 server on loopback with an empty bucket; its URL and a client of it."""
    import boto3  # imported here: collecting the serving tests should not pay for moto
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    yield endpoint, s3
    server.stop()


@pytest.fixture(scope="module")
async def backend_store(settings: Settings) -> AsyncIterator[str]:
    """A fresh `mlflow_<random>` database on the session's Postgres, as the SQLAlchemy URL
    `mlflow server` takes (psycopg 3; the embedded server's Unix-socket host rides along)."""
    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(settings.database_url or "").set(drivername="postgresql+psycopg", database=name)
    yield url.render_as_string(hide_password=False)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@dataclass
class Launched:
    """A started `mlflow server` process, not necessarily answering yet."""

    uri: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def wait_healthy(self) -> str:
        """The server's URI once it answers /health; fails with its log if it exits or the
        deadline passes first."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self.uri
            except httpx.TransportError:
                pass
            try:  # the pause between polls waits on the process: an exit ends it at once
                self.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                continue
            break
        log = self.log_path.read_text()[-4000:]
        raise AssertionError(f"mlflow server did not become healthy:\n{log}")


@pytest.fixture(scope="module")
def server(
    s3_endpoint: tuple[str, Any], backend_store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    """`mlflow server` as compose and Kubernetes run it: Postgres store, proxied S3 artefacts
    (the S3 endpoint and credentials are the server's alone). Started, not awaited: it boots
    while the model is fitted (see `team`)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_GLOBALS}
    env |= {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint[0], "AWS_DEFAULT_REGION": "us-east-1"}
    env |= S3_CREDENTIALS | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # GenAI job runners: unused here
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store]
    argv += ["--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_path = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with log_path.open("wb") as log:
        # its own process group: `mlflow server` runs uvicorn as a child process
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Launched(f"http://127.0.0.1:{port}", process, log_path)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def garch(bundled_bars: pd.DataFrame) -> Any:
    return garch_bundle(bundled_bars)


@pytest.fixture(scope="module")
def team(
    server: Launched,
    garch: Any,  # after `server`: fitted while the server boots
    s3_endpoint: tuple[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Team]:
    """Our registry configured as a team member's process is (MLFLOW_TRACKING_URI=the server),
    working in an empty folder; MLflow's globals and the environment are restored after."""
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    uri = server.wait_healthy()
    saved_env = {k: os.environ.get(k) for k in (*MLFLOW_GLOBALS, registry.ARTIFACT_ROOT_ENV)}
    saved_tracking = _tracking_service.utils._tracking_uri
    saved_registry = _model_registry.utils._registry_uri
    saved_experiment = fluent._active_experiment_id
    saved_cwd = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("workdir"))
    try:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield Team(uri, registry.configure(uri), s3_endpoint[1])
    finally:
        os.chdir(saved_cwd)
        mlflow.set_tracking_uri(saved_tracking)
        _model_registry.utils._registry_uri = saved_registry
        fluent._active_experiment_id = saved_experiment
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
async def audit(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The alias-audit database, migrated; this module's moves are rolled back afterwards so
    the session's other tests never see them."""
    conn = await connect(settings.database_url or "")
    transaction = conn.transaction()
    await transaction.start()
    yield conn
    await transaction.rollback()
    await conn.close()


def garch_bundle(bars: pd.DataFrame) -> Any:
    """A classical (GARCH) bundle of TICKERS fitted up to the production fit's end, as the
    train stage fits it: seconds, and no torch."""
    from features.windows import FeatureConfig
    from training.baselines import ClassicalFits
    from training.bundle import ClassicalBundle
    from training.data import build_panel, final_fold, market_close

    recent = bars[bars["ticker"].isin(TICKERS) & (bars["date"] >= "2019")]
    panel = build_panel(
        recent, FeatureConfig(window=TINY.window), TINY.horizons, market=market_close(bars)
    )
    fold = final_fold(panel.dates, TINY.val_days, TINY.embargo)
    fits = ClassicalFits(panel)
    fitted = {t: f for t in TICKERS if (f := fits.fitted("garch", t, fold.fit_end)) is not None}
    assert fitted, "GARCH did not fit"
    skill = {
        h: {"skill_vs_rw": 0.0, "dm_pvalue": 0.9, "coverage_80": 0.8, "verdict": "test"}
        for h in TINY.horizons
    }
    return ClassicalBundle(
        "garch",
        TINY.horizons,
        {t: f.params for t, f in fitted.items()},
        {t: {h: list(q) for h, q in f.z.items()} for t, f in fitted.items()},
        {"skill": skill},
    )


def log_training_run(bundle: Any, models_dir: Path) -> str:
    """Log the bundle in a training run and leave the run file `stockcopilot register` reads,
    as the train stage does (pipelines.train); the logged model's URI."""
    out = models_dir / "garch"
    out.mkdir(parents=True)
    registry.experiment("garch")
    with mlflow.start_run(run_name="garch-test") as run:
        model_uri = registry.log_bundle(bundle, out / "bundle")
    info = {"family": "garch", "profile": "test", "run_id": run.info.run_id, "model_uri": model_uri}
    (out / "run.json").write_text(json.dumps(info))
    return model_uri


@pytest.fixture(scope="module")
async def registered(
    team: Team, garch: Any, audit: asyncpg.Connection, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A garch training run registered through the server as `stockcopilot register` does it
    (version 1, champion: the family had none), and the same model again as version 2, the
    challenger (one upload: the versions differ by number, which is what serving reports)."""
    models_dir = tmp_path_factory.mktemp("models")
    model_uri = log_training_run(garch, models_dir)
    champion = (await register_trained(team.client, audit, "tester", models_dir))["garch"]
    challenger = registry.register(model_uri, "garch", {"profile": "test"})
    await move_alias(team.client, audit, "garch", CHALLENGER, challenger, "tester", "a second")
    return {CHAMPION: champion, CHALLENGER: challenger}


def ko_request(bars: pd.DataFrame, variant: str = CHAMPION) -> ForecastRequest:
    ko = bars[(bars["ticker"] == "KO") & (bars["date"] <= "2022-06-01")].tail(300)
    dates: list[date] = ko["date"].dt.date.tolist()
    series = SeriesInput.of("KO", dates, ko["close"].tolist())
    return ForecastRequest(family="garch", variant=variant, series=[series])


async def test_training_registers_through_the_server_with_artefacts_in_the_bucket(
    team: Team, registered: dict[str, str]
) -> None:
    assert registered == {CHAMPION: "1", CHALLENGER: "2"}
    assert registry.alias_version(team.client, "garch", CHAMPION) == "1"
    assert registry.alias_version(team.client, "garch", CHALLENGER) == "2"
    found = team.client.get_experiment_by_name(model_name("garch"))
    assert found is not None and found.artifact_location.startswith("mlflow-artifacts:")
    pages = team.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    models = [k for k in keys if k.startswith(f"{PREFIX}/{found.experiment_id}/")]
    assert sum(k.endswith("/MLmodel") for k in models) == 1, keys
    assert sum(k.endswith("/bundle.json") for k in models) == 1, keys
    assert not any(Path.cwd().iterdir())  # no local store, no local artefacts
    assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ  # this process could not reach the bucket


async def test_serving_follows_a_promotion_and_a_rollback_made_through_the_server(
    team: Team,
    registered: dict[str, str],
    audit: asyncpg.Connection,
    bundled_bars: pd.DataFrame,
) -> None:
    predictor = LocalPredictor(registry.configure(team.uri), alias_ttl_s=0.1)
    request = ko_request(bundled_bars)

    async def serves(version: str) -> bool:
        return (await predictor.forecast(request)).version == version

    first = await predictor.forecast(request)
    assert first.version == registered[CHAMPION] and first.forecasts
    challenger = await predictor.forecast(ko_request(bundled_bars, CHALLENGER))
    assert challenger.version == registered[CHALLENGER]

    promoted = registered[CHALLENGER]
    await move_alias(team.client, audit, "garch", CHAMPION, promoted, "tester", "promote")
    assert await eventually(lambda: serves(promoted), 30), "serving kept the old champion"

    move = await rollback(team.client, audit, "garch", "tester", "worse live")
    assert (move.from_version, move.to_version) == (promoted, registered[CHAMPION])
    assert registry.alias_version(team.client, "garch", CHAMPION) == registered[CHAMPION]
    assert await eventually(lambda: serves(registered[CHAMPION]), 30), "rollback not followed"
