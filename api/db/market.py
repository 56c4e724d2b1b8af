"""Repositories for instruments and daily bars. All SQL is parametrised."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import asyncpg
import pandas as pd

from features.bars import OHLCV_COLUMNS

_BAR_INSERT_COLUMNS = ("ticker", "date", *OHLCV_COLUMNS, "source")


@dataclass(frozen=True)
class InstrumentRow:
    ticker: str
    name: str
    asset_type: str
    sector: str | None
    source: str


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int


def _records(frame: pd.DataFrame) -> Iterator[tuple]:
    """Canonical frame -> DB tuples; NaN becomes NULL (missing data stays missing)."""
    for row in frame.itertuples(index=False):
        yield (
            row.ticker,
            row.date.date(),
            *(
                None if math.isnan(v) else float(v)
                for v in (row.open, row.high, row.low, row.close, row.volume)
            ),
            row.source,
        )


class InstrumentRepository:
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._db = conn

    async def upsert(self, rows: list[InstrumentRow], universe_version: str | None) -> None:
        await self._db.executemany(
            """INSERT INTO instruments (ticker, name, asset_type, sector, source, universe_version)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (ticker) DO UPDATE SET name = EXCLUDED.name,
                   asset_type = EXCLUDED.asset_type, sector = EXCLUDED.sector,
                   source = EXCLUDED.source, universe_version = EXCLUDED.universe_version""",
            [(r.ticker, r.name, r.asset_type, r.sector, r.source, universe_version) for r in rows],
        )

    async def ensure(self, row: InstrumentRow) -> None:
        """Create the instrument if it does not exist; never overwrite a bundled one."""
        await self._db.execute(
            """INSERT INTO instruments (ticker, name, asset_type, sector, source)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ticker) DO NOTHING""",
            row.ticker,
            row.name,
            row.asset_type,
            row.sector,
            row.source,
        )

    async def get(self, ticker: str) -> asyncpg.Record | None:
        return await self._db.fetchrow(
            """SELECT i.ticker, i.name, i.asset_type, i.sector, i.source,
                      min(b.date) AS first_date, max(b.date) AS last_date, count(b.date) AS bars
               FROM instruments i LEFT JOIN bars b ON b.ticker = i.ticker
               WHERE i.ticker = $1 GROUP BY i.ticker""",
            ticker,
        )

    async def unknown(self, tickers: list[str]) -> list[str]:
        """Which of these tickers have no instrument, in the order given."""
        rows = await self._db.fetch(
            "SELECT ticker FROM instruments WHERE ticker = ANY($1::text[])", tickers
        )
        known = {r["ticker"] for r in rows}
        return [t for t in tickers if t not in known]

    async def search(self, query: str, limit: int) -> list[asyncpg.Record]:
        """Ticker prefix or name substring; exact ticker first, then prefix, then by name."""
        pattern = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return await self._db.fetch(
            """SELECT ticker, name, sector, asset_type FROM instruments
               WHERE ticker LIKE upper($1) || '%' OR lower(name) LIKE '%' || lower($1) || '%'
               ORDER BY (ticker = upper($2)) DESC, (ticker LIKE upper($1) || '%') DESC, name
               LIMIT $3""",
            pattern,
            query,
            limit,
        )


@dataclass(frozen=True)
class BarDates:
    sector: str | None
    last_date: date | None  # the ticker's newest bar
    as_of: date | None  # its newest bar on or before the requested date


class BarRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert_new(self, frame: pd.DataFrame) -> int:
        """COPY into a staging table, keep only bars not stored yet. Returns rows added."""
        await self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bars_staging (LIKE bars INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await self._conn.copy_records_to_table(
            "bars_staging", records=_records(frame), columns=_BAR_INSERT_COLUMNS
        )
        status = await self._conn.execute(
            "INSERT INTO bars SELECT * FROM bars_staging ON CONFLICT (ticker, date) DO NOTHING"
        )
        await self._conn.execute("TRUNCATE bars_staging")
        return int(status.split()[-1])

    async def upsert(self, frame: pd.DataFrame) -> UpsertCounts:
        """Insert or replace bars (a user's import corrects earlier imports)."""
        rows = await self._conn.fetch(
            """INSERT INTO bars (ticker, date, open, high, low, close, volume, source)
               SELECT * FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[],
                                    $5::float8[], $6::float8[], $7::float8[], $8::text[])
               ON CONFLICT (ticker, date) DO UPDATE SET open = EXCLUDED.open,
                   high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
                   volume = EXCLUDED.volume, source = EXCLUDED.source
               RETURNING (xmax = 0) AS inserted""",
            *map(list, zip(*_records(frame), strict=True)),
        )
        inserted = sum(1 for r in rows if r["inserted"])
        return UpsertCounts(inserted=inserted, updated=len(rows) - inserted)

    async def bar_dates_many(self, tickers: list[str], end: date | None) -> dict[str, BarDates]:
        """For each known ticker: sector, newest bar date, and the newest bar date on or before
        `end` (None when there is none). Unknown tickers are absent. Index lookups only."""
        rows = await self._conn.fetch(
            """SELECT i.ticker, i.sector,
                      (SELECT max(date) FROM bars WHERE ticker = i.ticker) AS last_date,
                      (SELECT max(date) FROM bars WHERE ticker = i.ticker
                         AND ($2::date IS NULL OR date <= $2)) AS as_of
               FROM unnest($1::text[]) AS t(ticker) JOIN instruments i ON i.ticker = t.ticker""",
            tickers,
            end,
        )
        return {r["ticker"]: BarDates(r["sector"], r["last_date"], r["as_of"]) for r in rows}

    async def recent_closes_many(
        self, ends: dict[str, date], limit: int
    ) -> dict[str, tuple[list[int], list[float]]]:
        """The newest `limit` closes of each ticker up to its own end date, oldest first, as
        (day numbers since 1970-01-01, closes), in one round trip of one row per ticker."""
        rows = await self._conn.fetch(
            """SELECT t.ticker,
                      array_agg(b.date - DATE '1970-01-01' ORDER BY b.date) AS days,
                      array_agg(b.close ORDER BY b.date) AS closes
               FROM unnest($1::text[], $2::date[]) AS t(ticker, end_date)
               CROSS JOIN LATERAL (SELECT date, close FROM bars
                                   WHERE ticker = t.ticker AND date <= t.end_date
                                   ORDER BY date DESC LIMIT $3) b
               GROUP BY t.ticker""",
            list(ends),
            list(ends.values()),
            limit,
        )
        found: dict[str, tuple[list[int], list[float]]] = {t: ([], []) for t in ends}
        for r in rows:
            found[r["ticker"]] = (r["days"], r["closes"])
        return found

    async def count(self) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM bars"))

    async def history(
        self,
        ticker: str,
        end: date | None = None,
        last: int | None = None,
        start: date | None = None,
    ) -> pd.DataFrame:
        """Date-indexed OHLCV for one ticker up to `end` (inclusive); only the `last` bars, or
        those from `start` on, when given."""
        rows = await self._conn.fetch(
            """SELECT * FROM (
                   SELECT date, open, high, low, close, volume FROM bars
                   WHERE ticker = $1 AND ($2::date IS NULL OR date <= $2)
                     AND ($4::date IS NULL OR date >= $4)
                   ORDER BY date DESC LIMIT $3
               ) recent ORDER BY date""",
            ticker,
            end,
            last,
            start,
        )
        frame = pd.DataFrame([tuple(r) for r in rows], columns=["date", *OHLCV_COLUMNS])
        frame["date"] = pd.to_datetime(frame["date"])
        return frame.set_index("date").astype("float64")
