"""`stockcopilot up`: everything a fresh machine needs to serve the product."""

from __future__ import annotations

import asyncio

import structlog
import uvicorn
from rich.console import Console

from api.app import create_app
from api.settings import Settings
from pipelines.embedded import resolved_settings
from pipelines.ingest import bars_stored, ingest_bundled

log = structlog.get_logger(__name__)


def ensure_champions(settings: Settings, console: Console) -> None:
    """Train and register the quick profile once if any family lacks a champion."""
    from pipelines.models import connect, default_actor, register_trained
    from pipelines.train import train_ensemble, train_member
    from training import registry
    from training.data import MEMBERS

    client = registry.configure(settings.mlflow_tracking_uri)
    missing = [
        f for f in registry.FAMILIES if registry.alias_version(client, f, "champion") is None
    ]
    if not missing:
        return
    console.print(f"no champion for {', '.join(missing)}: training the quick profile once ...")
    for family in MEMBERS:
        train_member(family, "quick", console.print)
    train_ensemble("quick", console.print)

    async def register() -> dict[str, str]:
        conn = await connect(settings.database_url or "")
        try:
            return await register_trained(client, conn, default_actor())
        finally:
            await conn.close()

    console.print(f"registered {asyncio.run(register())}")


def run(settings: Settings, console: Console) -> None:
    """Start services, prepare data and models on first run, serve until Ctrl-C, then stop."""
    from serving.local import DbWeights, LocalPredictor
    from training import registry

    with resolved_settings(settings) as ready:
        database_url = ready.database_url or ""
        if asyncio.run(bars_stored(database_url)) == 0:
            console.print("first run: ingesting the bundled market data ...")
            report = asyncio.run(ingest_bundled(database_url))
            console.print(f"ingested {report.rows_added} bars in {report.seconds:.1f} s")
        ensure_champions(ready, console)
        predictor = LocalPredictor(
            registry.configure(ready.mlflow_tracking_uri),
            DbWeights(ready),
            alias_ttl_s=ready.alias_poll_s,
        )
        base = f"http://{ready.host}:{ready.port}"
        console.print(f"Stock Copilot API listening on {base}  (docs: {base}/docs)")
        console.print("MLflow UI (promote/roll back models): uv run stockcopilot mlflow-ui")
        console.print(f"data folder: {ready.resolved_data_dir}  — Ctrl-C stops everything")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ready, predictor),
                host=ready.host,
                port=ready.port,
                log_config=None,
                access_log=False,
                proxy_headers=False,
            )
        )
        server.run()
    log.info("stopped")
