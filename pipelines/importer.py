"""`stockcopilot import-bars`: the CLI face of MarketDataService.import_csv."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from api.db.migrate import upgrade
from api.db.pool import create_pool
from api.errors import ProblemError
from api.services.market_data import MarketDataService
from api.settings import Settings


async def import_file(
    settings: Settings,
    path: Path,
    ticker: str,
    name: str | None,
    sector: str | None,
    console: Console,
) -> bool:
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await upgrade(conn)
        service = MarketDataService(pool)
        content = await asyncio.to_thread(path.read_bytes)
        rows, counts = await service.import_csv(ticker, content, path.name, name, sector)
    except ProblemError as problem:
        console.print(f"[red]{escape(problem.detail)}[/red]")
        for error in problem.extensions.get("errors", []):
            column = f" ({error['column']})" if error["column"] else ""
            console.print(f"  line {error['line']}{column}: {error['message']}", markup=False)
        return False
    finally:
        await pool.close()
    console.print(
        f"imported {rows} bars for {ticker.upper()}: {counts.inserted} new, "
        f"{counts.updated} replaced"
    )
    return True
