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


def run(settings: Settings, console: Console) -> None:
    """Start services, prepare data on first run, serve until Ctrl-C, then stop everything."""
    with resolved_settings(settings) as ready:
        database_url = ready.database_url or ""
        if asyncio.run(bars_stored(database_url)) == 0:
            console.print("first run: ingesting the bundled market data ...")
            report = asyncio.run(ingest_bundled(database_url))
            console.print(f"ingested {report.rows_added} bars in {report.seconds:.1f} s")
        base = f"http://{ready.host}:{ready.port}"
        console.print(f"Stock Copilot API listening on {base}  (docs: {base}/docs)")
        console.print(f"data folder: {ready.resolved_data_dir}  — Ctrl-C stops everything")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ready),
                host=ready.host,
                port=ready.port,
                log_config=None,
                access_log=False,
                proxy_headers=False,
            )
        )
        server.run()
    log.info("stopped")
