"""Load the bundled real market data into Postgres with COPY, idempotently, showing progress."""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.db.market import BarRepository, InstrumentRepository, InstrumentRow
from api.db.migrate import upgrade
from features.datasets import Universe, load_bundled_bars, load_universe


@dataclass(frozen=True)
class IngestReport:
    tickers: int
    rows_seen: int
    rows_added: int
    seconds: float


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


async def ingest_frame(
    conn: asyncpg.Connection, bars: pd.DataFrame, universe: Universe, show_progress: bool
) -> int:
    """Upsert the universe's instruments, then add bars not stored yet, one ticker at a time."""
    await InstrumentRepository(conn).upsert(
        [
            InstrumentRow(i.ticker, i.name, i.asset_type, i.sector, i.source)
            for i in universe.instruments
        ],
        universe.version,
    )
    repo = BarRepository(conn)
    added = 0
    with _progress(show_progress) as progress:
        task = progress.add_task("ingest", total=len(bars))
        for ticker, frame in bars.groupby("ticker", sort=True):
            progress.update(task, description=f"ingest {ticker:<5}")
            async with conn.transaction():
                added += await repo.insert_new(frame)
            progress.advance(task, len(frame))
    return added


async def ingest_bundled(database_url: str, show_progress: bool = True) -> IngestReport:
    """Migrate, then load every bundled dataset. A second run adds 0 rows."""
    started = time.perf_counter()
    universe = load_universe()
    bars = load_bundled_bars(universe)
    conn = await asyncpg.connect(database_url)
    try:
        await upgrade(conn)
        added = await ingest_frame(conn, bars, universe, show_progress)
    finally:
        await conn.close()
    return IngestReport(
        tickers=bars["ticker"].nunique(),
        rows_seen=len(bars),
        rows_added=added,
        seconds=time.perf_counter() - started,
    )


async def bars_stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await upgrade(conn)
        return await BarRepository(conn).count()
    finally:
        await conn.close()
