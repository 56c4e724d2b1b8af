"""What the market clock costs the request path: the prediction inputs' query (every target's
closes and the market's, `BarRepository.recent_closes`) on `bars` against the same query on
`visible_bars`, the clock-bounded view every user-facing read goes through, with the clock off
and on. Side by side in one run, on an embedded Postgres holding the bundled data.

    uv run python -m benchmarks.clock_overhead --queries 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import asyncpg

from api.db.clock import MarketClockRepository
from api.db.migrate import upgrade
from api.settings import Environment, Settings
from pipelines.embedded import resolved_settings
from pipelines.ingest import ingest_bundled

QUERY = """SELECT t.i, array_agg(b.close ORDER BY b.date)
FROM unnest($1::text[], $2::date[], $3::int[]) WITH ORDINALITY AS t(ticker, end_date, n, i)
CROSS JOIN LATERAL (SELECT date, close FROM {table}
                    WHERE ticker = t.ticker AND date <= t.end_date
                    ORDER BY date DESC LIMIT t.n) b
GROUP BY t.i"""
TICKERS = ["AAPL", "KO", "MSFT", "XOM", "JPM"]


async def _time(conn: asyncpg.Connection, table: str, queries: int) -> float:
    """Median milliseconds of the query over `queries` runs (after a warm-up)."""
    args = ([*TICKERS, "SPX"], [date(2022, 12, 28)] * 6, [400] * 5 + [800])
    sql = QUERY.format(table=table)
    for _ in range(50):
        await conn.fetch(sql, *args)
    runs = []
    for _ in range(queries):
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        runs.append(time.perf_counter() - started)
    return 1000 * statistics.median(runs)


async def _run(url: str, queries: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await upgrade(conn)
        await ingest_bundled(url)
        clock = MarketClockRepository(conn)
        await clock.stop()
        plain = await _time(conn, "bars", queries)
        off = await _time(conn, "visible_bars", queries)
        await clock.start_run(date(2022, 12, 28))
        on = await _time(conn, "visible_bars", queries)
        await clock.stop()
    finally:
        await conn.close()
    print(f"median of {queries} queries, {len(TICKERS)} targets + the market")
    print(f"bars                     {plain:7.3f} ms   1.00x")
    print(f"visible_bars, real clock {off:7.3f} ms   {off / plain:.2f}x")
    print(f"visible_bars, replay     {on:7.3f} ms   {on / plain:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Settings(
            environment=Environment.TEST,
            data_dir=Path(folder),
            database_url=None,
            redis_url=None,
        )
        with resolved_settings(base) as ready:
            asyncio.run(_run(ready.database_url or "", args.queries))


if __name__ == "__main__":
    main()
