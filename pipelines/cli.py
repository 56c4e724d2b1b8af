"""The `stockcopilot` command line."""

from __future__ import annotations

import asyncio
import warnings
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from api.logging import configure_logging
from api.security.keyfile import with_secrets
from api.settings import Settings
from pipelines.ab_cli import register_ab_commands
from pipelines.chat_cli import register_chat_commands
from pipelines.data_cli import register_data_commands
from pipelines.feed_cli import register_feed_commands
from pipelines.model_cli import register_commands
from pipelines.security_cli import register_security_commands, register_similarity_commands

app = typer.Typer(help="Stock Copilot: serve, ingest and manage the product.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


def _settings() -> Settings:
    # Lightning's own dependency (torch pytree) deprecation noise says nothing to our users
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, settings.log_file)
    return with_secrets(settings)


@app.command()
def up(
    port: Annotated[int | None, typer.Option(envvar="PORT", help="HTTP port")] = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="serve in-process, without Ray")] = False,
    feed: Annotated[
        str | None,
        typer.Option(help="market feed: replay (default), live or off; env FEED_MODE"),
    ] = None,
    feed_start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="first replayed day (default: a year back)"),
    ] = None,
    feed_interval: Annotated[
        float | None, typer.Option(min=0.05, help="seconds per replayed trading day")
    ] = None,
) -> None:
    """Start embedded services (if no URLs are set), migrate, ingest on first run, serve the API
    and run the market feed (a replay of stored bars by default)."""
    from pipelines.up import run

    if feed not in (None, "replay", "live", "off"):
        raise typer.BadParameter("choose replay, live or off", param_hint="--feed")
    settings = _settings()
    updates = {
        k: v
        for k, v in {
            "port": port,
            "host": host,
            "feed_mode": feed,
            "feed_replay_start": feed_start.date() if feed_start else None,
            "feed_interval_s": feed_interval,
        }.items()
        if v is not None
    }
    run(settings.model_copy(update=updates), console, use_ray=not no_ray)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (idempotent)."""
    import asyncpg

    from api.db.migrate import current_version, upgrade
    from pipelines.embedded import resolved_settings

    async def _run(url: str) -> tuple[list[int], int]:
        conn = await asyncpg.connect(url)
        try:
            applied = await upgrade(conn)
            return applied, await current_version(conn)
        finally:
            await conn.close()

    with resolved_settings(_settings(), need_redis=False) as settings:
        applied, version = asyncio.run(_run(settings.database_url or ""))
    console.print(f"schema at version {version}; applied now: {applied or 'none'}")


@app.command()
def ingest(
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Load the bundled real market data into Postgres (a second run adds 0 rows)."""
    from pipelines.embedded import resolved_settings
    from pipelines.ingest import ingest_bundled

    with resolved_settings(_settings(), need_redis=False) as settings:
        report = asyncio.run(ingest_bundled(settings.database_url or "", not quiet))
    console.print(
        f"{report.tickers} tickers, {report.rows_seen} bars seen, {report.rows_added} added "
        f"in {report.seconds:.1f} s"
    )


@app.command("import-bars")
def import_bars(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    ticker: Annotated[str, typer.Option(help="ticker to store the bars under")],
    name: Annotated[str | None, typer.Option(help="instrument name (new tickers)")] = None,
    sector: Annotated[str | None, typer.Option(help="GICS sector (new tickers)")] = None,
) -> None:
    """Import your own OHLCV CSV; all rows are validated and nothing is written on any error."""
    from pipelines.embedded import resolved_settings
    from pipelines.importer import import_file

    with resolved_settings(_settings(), need_redis=False) as settings:
        ok = asyncio.run(import_file(settings, file, ticker, name, sector, console))
    raise typer.Exit(0 if ok else 1)


@app.command()
def snapshot(
    out: Annotated[Path, typer.Option(help="parquet file to write")] = Path("data/bars.parquet"),
) -> None:
    """Write the bundled canonical bars to a parquet file (the DVC `ingest` stage)."""
    from features.datasets import load_bundled_bars

    _settings()
    bars = load_bundled_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    bars.to_parquet(out, index=False)
    console.print(f"wrote {len(bars)} bars for {bars['ticker'].nunique()} tickers to {out}")


register_commands(app, _settings, console)
register_ab_commands(app, _settings, console)
register_security_commands(app, _settings, console)
register_similarity_commands(app, _settings, console)
register_feed_commands(app, _settings, console)
register_data_commands(app, _settings, console)
register_chat_commands(app, _settings, console)


def main() -> None:
    app()
