"""`stockcopilot data update`: bring stored bars up to the last completed session from the
configured live provider, continuous across splits and dividends (`api.services.bar_sync`).

Each ticker is fetched and stored in its own transaction from its newest final bar on, so an
update is idempotent (a second run fetches nothing) and safe to interrupt (what was stored stays
stored; the next run starts where it stopped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from typing import Annotated

import asyncpg
import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.services.bar_sync import BarSync, TickerUpdate
from api.settings import Settings
from features.live import LiveProvider, ProviderError, RateLimited, UnknownSymbol
from features.sessions import MarketState, market_state

log = structlog.get_logger(__name__)
RATE_LIMIT_RETRIES = 4
RATE_LIMIT_WAIT_CAP_S = 120.0


async def _update_one(
    sync: BarSync, ticker: str, overlap: object, state: MarketState
) -> TickerUpdate:
    """One ticker, waiting out rate limits a few times (Retry-After, else jittered backoff)."""
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            update, _ = await sync.update(ticker, overlap, state)  # type: ignore[arg-type]
            return update
        except RateLimited as exc:
            if attempt == RATE_LIMIT_RETRIES:
                return TickerUpdate(ticker, error=f"rate limited: {exc}")
            ceiling = min(RATE_LIMIT_WAIT_CAP_S, 5.0 * 2**attempt)
            await asyncio.sleep(max(exc.retry_after_s or 0.0, random.uniform(0, ceiling)))  # noqa: S311
        except UnknownSymbol as exc:
            return TickerUpdate(ticker, error=f"unknown to {sync.provider}: {exc}")
        except ProviderError as exc:
            return TickerUpdate(ticker, error=str(exc)[:200])
    raise AssertionError("unreachable")


async def update_bars(
    pool: asyncpg.Pool,
    provider: LiveProvider,
    tickers: list[str] | None,
    progress: Callable[[str, TickerUpdate], None] = lambda *_: None,
) -> list[TickerUpdate]:
    """Update every instrument (or `tickers`) to the last completed session; one summary each.

    Only final bars are stored: a session still trading is left for the next update."""
    from api.db.clock import FeedStatusRepository
    from api.db.market import InstrumentRepository

    names = tickers or sorted(await InstrumentRepository(pool).tickers())
    unknown = await InstrumentRepository(pool).unknown(names)
    if unknown:
        raise typer.BadParameter(f"unknown ticker(s): {', '.join(unknown)}; import them first")
    # final bars only: a session trading now is treated as not yet begun
    state = dataclasses.replace(market_state(), open=False, current=None)
    sync = BarSync(pool, provider)
    overlaps = await sync.overlaps(names)
    updates = []
    for ticker in names:
        update = await _update_one(sync, ticker, overlaps.get(ticker), state)
        updates.append(update)
        progress(ticker, update)
    status = FeedStatusRepository(pool)
    failed = [u for u in updates if u.error and not u.error.startswith("unknown")]
    if failed and len(failed) == len(updates):
        await status.failed(provider.name, f"data update: {failed[0].error}")
    else:
        newest = max((u.newest for u in updates if u.newest), default=None)
        await status.succeeded(provider.name, newest)
    return updates


def print_summary(console: Console, updates: list[TickerUpdate], provider: str) -> None:
    """One row per ticker, then each failure in full (a table column would wrap it away)."""
    table = Table(
        "ticker",
        "new bars",
        "newest",
        "rescaled",
        "corporate actions",
        "status",
        title=f"data update from {provider}",
    )
    for u in updates:
        table.add_row(
            u.ticker,
            str(u.added),
            str(u.newest or "-"),
            str(u.rescaled or ""),
            "; ".join(u.actions),
            "ok" if u.ok else "[red]failed[/red]",
        )
    console.print(table)
    for u in updates:
        if u.error:
            console.print(f"{u.ticker}: {u.error}", soft_wrap=True, markup=False)


def register_data_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    data_app = typer.Typer(help="Market data.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("update")
    def update(
        tickers: Annotated[
            list[str] | None, typer.Option("--tickers", help="only these (default: every one)")
        ] = None,
    ) -> None:
        """Bring the database up to the last completed session from the configured provider
        (MARKET_DATA_PROVIDER), with a per-ticker summary. Idempotent; safe to interrupt."""
        from api.app import provider_from
        from api.db.market import InstrumentRepository
        from api.db.pool import create_pool
        from features.bars import normalise_ticker
        from pipelines.embedded import resolved_settings

        try:
            wanted = [normalise_ticker(t) for t in tickers] if tickers else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tickers") from exc
        with resolved_settings(settings_factory()) as ready:
            provider = provider_from(ready)

            async def run() -> list[TickerUpdate]:
                pool = await create_pool(ready)
                try:
                    with Progress(
                        TextColumn("[bold]{task.description}"),
                        BarColumn(),
                        MofNCompleteColumn(),
                        TimeElapsedColumn(),
                        console=console,
                        transient=True,
                    ) as bar:
                        task = bar.add_task(f"updating from {provider.name}", total=None)

                        def advance(ticker: str, done: TickerUpdate) -> None:
                            bar.update(task, advance=1, description=f"{ticker}")

                        names = wanted or sorted(await InstrumentRepository(pool).tickers())
                        bar.update(task, total=len(names))
                        return await update_bars(pool, provider, names, advance)
                finally:
                    await pool.close()

            updates = asyncio.run(run())
        print_summary(console, updates, provider.name)
        added = sum(u.added for u in updates)
        failed = sum(1 for u in updates if u.error)
        console.print(
            f"{added} new bar(s) for {len(updates) - failed} of {len(updates)} ticker(s)"
            + (f"; {failed} failed (see the table)" if failed else "")
        )
        if failed == len(updates):
            raise typer.Exit(code=1)
