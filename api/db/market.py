"""Repositories for instruments and daily bars. All SQL is parametrised.

Reads that answer users go through `visible_bars`, the bars up to the market clock's day
(migration 0011; every bar when the real clock applies), so a replay's "today" bounds every
answer. Only the replay itself, which plays the stored future, and the writers read `bars`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import asyncpg
import pandas as pd

from features.bars import OHLCV_COLUMNS

_BAR_INSERT_COLUMNS = ("ticker", "date", *OHLCV_COLUMNS, "source", "final")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_REPLACE = ", ".join(f"{c} = EXCLUDED.{c}" for c in _BAR_INSERT_COLUMNS[2:])


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
    """Canonical frame -> DB tuples; NaN becomes NULL (missing data stays missing). A bar is
    final unless the frame's `final` column says otherwise (a session still trading)."""
    finals = frame["final"] if "final" in frame else pd.Series(True, index=frame.index)
    for row, final in zip(frame.itertuples(index=False), finals, strict=True):
        yield (
            row.ticker,
            row.date.date(),
            *(
                None if math.isnan(v) else float(v)
                for v in (row.open, row.high, row.low, row.close, row.volume)
            ),
            row.source,
            bool(final),
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
               FROM instruments i LEFT JOIN visible_bars b ON b.ticker = i.ticker
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

    async def tickers(self) -> list[str]:
        """Every instrument's ticker."""
        return [r["ticker"] for r in await self._db.fetch("SELECT ticker FROM instruments")]

    async def equities(self) -> list[str]:
        """The equities' tickers, in order (users' imports are `user`, not `equity`)."""
        rows = await self._db.fetch(
            "SELECT ticker FROM instruments WHERE asset_type = 'equity' ORDER BY ticker"
        )
        return [r["ticker"] for r in rows]

    async def sectors(self, tickers: list[str]) -> dict[str, str | None]:
        """The GICS sector of each known ticker (None where it has none)."""
        rows = await self._db.fetch(
            "SELECT ticker, sector FROM instruments WHERE ticker = ANY($1::text[])", tickers
        )
        return {r["ticker"]: r["sector"] for r in rows}


@dataclass(frozen=True)
class BarDates:
    sector: str | None
    last_date: date | None  # the ticker's newest bar
    as_of: date | None  # its newest bar on or before the requested date


class BarRepository:
    """Daily bars. Takes a connection: `insert_new` stages rows in a temporary table, which
    lives on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert_new(self, frame: pd.DataFrame) -> int:
        """COPY into a staging table; add bars not stored yet and replace provisional ones (a
        final bar stays as stored). Returns rows added or replaced."""
        await self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bars_staging (LIKE bars INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await self._conn.copy_records_to_table(
            "bars_staging", records=_records(frame), columns=_BAR_INSERT_COLUMNS
        )
        status = await self._conn.execute(
            f"""INSERT INTO bars ({", ".join(_BAR_INSERT_COLUMNS)})
                SELECT {", ".join(_BAR_INSERT_COLUMNS)} FROM bars_staging
                ON CONFLICT (ticker, date) DO UPDATE SET {_REPLACE} WHERE NOT bars.final"""
        )
        await self._conn.execute("TRUNCATE bars_staging")
        return int(status.split()[-1])

    async def upsert(self, frame: pd.DataFrame) -> UpsertCounts:
        """Insert or replace bars (a user's import corrects earlier imports; a provider's
        answer is its truth as of now)."""
        if frame.empty:
            return UpsertCounts(inserted=0, updated=0)
        rows = await self._conn.fetch(
            f"""INSERT INTO bars ({", ".join(_BAR_INSERT_COLUMNS)})
               SELECT * FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[],
                                    $5::float8[], $6::float8[], $7::float8[], $8::text[],
                                    $9::bool[])
               ON CONFLICT (ticker, date) DO UPDATE SET {_REPLACE}
               RETURNING (xmax = 0) AS inserted""",
            *map(list, zip(*_records(frame), strict=True)),
        )
        inserted = sum(1 for r in rows if r["inserted"])
        return UpsertCounts(inserted=inserted, updated=len(rows) - inserted)

    async def last_final_dates(self, tickers: list[str]) -> dict[str, date | None]:
        """Each ticker's newest final stored bar (None when it has none): where a provider's
        answer must start so that it overlaps the stored history by one bar."""
        rows = await self._conn.fetch(
            """SELECT t.ticker, (SELECT max(date) FROM bars
                                 WHERE ticker = t.ticker AND final) AS last
               FROM unnest($1::text[]) AS t(ticker)""",
            tickers,
        )
        return {r["ticker"]: r["last"] for r in rows}

    async def stored_bar(self, ticker: str, day: date) -> tuple[float, float | None] | None:
        """(close, volume) of the stored bar of `ticker` on `day`, if there is one."""
        row = await self._conn.fetchrow(
            "SELECT close, volume FROM bars WHERE ticker = $1 AND date = $2", ticker, day
        )
        return None if row is None else (row["close"], row["volume"])

    async def rescale(
        self, ticker: str, through: date, price_factor: float, volume_factor: float, reason: str
    ) -> int:
        """Multiply the prices of every bar of `ticker` up to `through` by `price_factor` and
        its volumes by `volume_factor` (a split or dividend since: the adjusted series stays
        continuous), and record why. Returns the bars rescaled."""
        status = await self._conn.execute(
            f"""UPDATE bars SET {", ".join(f"{c} = {c} * $3" for c in _PRICE_COLUMNS)},
                   volume = volume * $4
               WHERE ticker = $1 AND date <= $2""",
            ticker,
            through,
            price_factor,
            volume_factor,
        )
        await self._conn.execute(
            """INSERT INTO bar_adjustments (ticker, before, price_factor, volume_factor, reason)
               VALUES ($1, $2::date + 1, $3, $4, $5)""",
            ticker,
            through,
            price_factor,
            volume_factor,
            reason[:500],
        )
        return int(status.split()[-1])

    async def record_actions(
        self, actions: list[tuple[str, date, float, float]], source: str
    ) -> int:
        """Store (ticker, ex_date, split, dividend) corporate actions; known ones are kept.
        Returns how many were new."""
        if not actions:
            return 0
        status = await self._conn.execute(
            """INSERT INTO corporate_actions (ticker, ex_date, split, dividend, source)
               SELECT t, d, s, v, $5 FROM unnest($1::text[], $2::date[], $3::float8[],
                                                 $4::float8[]) AS a(t, d, s, v)
               ON CONFLICT (ticker, ex_date) DO NOTHING""",
            *map(list, zip(*actions, strict=True)),
            source,
        )
        return int(status.split()[-1])

    async def bar_dates_many(self, tickers: list[str], end: date | None) -> dict[str, BarDates]:
        """For each known ticker: sector, newest bar date, and the newest bar date on or before
        `end` (None when there is none). Unknown tickers are absent. Index lookups only."""
        rows = await self._conn.fetch(
            """SELECT i.ticker, i.sector,
                      (SELECT max(date) FROM visible_bars WHERE ticker = i.ticker) AS last_date,
                      (SELECT max(date) FROM visible_bars WHERE ticker = i.ticker
                         AND ($2::date IS NULL OR date <= $2)) AS as_of
               FROM unnest($1::text[]) AS t(ticker) JOIN instruments i ON i.ticker = t.ticker""",
            tickers,
            end,
        )
        return {r["ticker"]: BarDates(r["sector"], r["last_date"], r["as_of"]) for r in rows}

    async def recent_closes(
        self, wanted: list[tuple[str, date, int]]
    ) -> list[tuple[list[int], list[float]]]:
        """For each (ticker, end date, n): its newest `n` closes up to that date, oldest first,
        as (day numbers since 1970-01-01, closes), in the order asked. One round trip of one
        row per entry; a ticker may be asked for twice (the market beside a target)."""
        rows = await self._conn.fetch(
            """SELECT t.i,
                      array_agg(b.date - DATE '1970-01-01' ORDER BY b.date) AS days,
                      array_agg(b.close ORDER BY b.date) AS closes
               FROM unnest($1::text[], $2::date[], $3::int[])
                    WITH ORDINALITY AS t(ticker, end_date, n, i)
               CROSS JOIN LATERAL (SELECT date, close FROM visible_bars
                                   WHERE ticker = t.ticker AND date <= t.end_date
                                   ORDER BY date DESC LIMIT t.n) b
               GROUP BY t.i""",
            [w[0] for w in wanted],
            [w[1] for w in wanted],
            [w[2] for w in wanted],
        )
        found: list[tuple[list[int], list[float]]] = [([], []) for _ in wanted]
        for r in rows:
            found[r["i"] - 1] = (r["days"], r["closes"])
        return found

    async def stored_closes(self, ticker: str) -> pd.Series:
        """Every stored close of `ticker` by date, past the clock: for offline builds (the
        similarity index) whose readers apply the clock themselves."""
        rows = await self._conn.fetch(
            "SELECT date, close FROM bars WHERE ticker = $1 ORDER BY date", ticker
        )
        return pd.Series(
            [r["close"] for r in rows],
            index=pd.DatetimeIndex([r["date"] for r in rows], name="date"),
            dtype="float64",
            name="close",
        )

    async def count(self) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM bars"))

    async def last_date(self, ticker: str) -> date | None:
        """The date of the ticker's newest bar."""
        return await self._conn.fetchval(
            "SELECT max(date) FROM visible_bars WHERE ticker = $1", ticker
        )

    async def newest_date(self) -> date | None:
        """The date of the newest bar stored for any ticker (past the clock: the replay's)."""
        return await self._conn.fetchval("SELECT max(date) FROM bars")

    async def last_date_any(self) -> date | None:
        """The newest bar any query can see, of any ticker."""
        return await self._conn.fetchval("SELECT max(date) FROM visible_bars")

    async def last_ohlc_date(self) -> date | None:
        """The newest date with a bar that has its open (close-only series have none)."""
        return await self._conn.fetchval(
            "SELECT max(date) FROM visible_bars WHERE open IS NOT NULL"
        )

    async def trading_days(self, start: date, end: date | None) -> list[date]:
        """The dates with stored bars from `start` to `end` (inclusive; open-ended when None),
        past the clock: the days a replay plays."""
        rows = await self._conn.fetch(
            """SELECT DISTINCT date FROM bars WHERE date >= $1 AND ($2::date IS NULL OR date <= $2)
               ORDER BY date""",
            start,
            end,
        )
        return [r["date"] for r in rows]

    async def of_day(self, day: date) -> pd.DataFrame:
        """Every stored bar of one trading day, in the canonical columns, by ticker (past the
        clock: the day a replay is about to play)."""
        rows = await self._conn.fetch(
            """SELECT ticker, date, open, high, low, close, volume, source FROM bars
               WHERE date = $1 ORDER BY ticker""",
            day,
        )
        return pd.DataFrame([dict(r) for r in rows])

    async def previous_closes(self, tickers: list[str], day: date) -> dict[str, float]:
        """Each ticker's last close before `day` (absent when it has none)."""
        rows = await self._conn.fetch(
            """SELECT DISTINCT ON (ticker) ticker, close FROM visible_bars
               WHERE ticker = ANY($1::text[]) AND date < $2
               ORDER BY ticker, date DESC""",
            tickers,
            day,
        )
        return {r["ticker"]: r["close"] for r in rows}

    async def last_closes(
        self, tickers: list[str], as_of: date | None
    ) -> dict[str, tuple[float, date]]:
        """(close, date) of each ticker's newest bar on or before `as_of` (None: the newest)."""
        rows = await self._conn.fetch(
            """SELECT t.ticker, b.close, b.date FROM unnest($1::text[]) AS t(ticker)
               CROSS JOIN LATERAL (SELECT close, date FROM visible_bars WHERE ticker = t.ticker
                                   AND ($2::date IS NULL OR date <= $2)
                                   ORDER BY date DESC LIMIT 1) b""",
            tickers,
            as_of,
        )
        return {r["ticker"]: (r["close"], r["date"]) for r in rows}

    async def closes(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        """Closes from `start` to `end`: one row per date (a DatetimeIndex), one column per
        ticker that has bars then (an empty frame with the asked columns when none has)."""
        rows = await self._conn.fetch(
            """SELECT ticker, date, close FROM visible_bars
               WHERE ticker = ANY($1::text[]) AND date BETWEEN $2 AND $3""",
            tickers,
            start,
            end,
        )
        if not rows:
            return pd.DataFrame(columns=tickers, dtype=float)
        frame = pd.DataFrame([tuple(r) for r in rows], columns=["ticker", "date", "close"])
        frame["date"] = pd.to_datetime(frame["date"])
        return frame.pivot(index="date", columns="ticker", values="close")

    async def universe_closes(self, benchmark: str, start: date) -> pd.DataFrame:
        """Closes from `start` of every equity and of `benchmark`, one row per bar, with the
        instrument's sector and asset type (columns ticker, date, close, sector, asset_type)."""
        rows = await self._conn.fetch(
            """SELECT b.ticker, b.date, b.close, i.sector, i.asset_type
               FROM visible_bars b JOIN instruments i ON i.ticker = b.ticker
               WHERE (i.asset_type = 'equity' OR i.ticker = $1) AND b.date >= $2""",
            benchmark,
            start,
        )
        return pd.DataFrame(
            [tuple(r) for r in rows], columns=["ticker", "date", "close", "sector", "asset_type"]
        )

    async def full_ohlc(self, start: date, end: date) -> pd.DataFrame:
        """Bars from `start` to `end` with open, high and low, of the tickers that have such a
        bar on `end`, by ticker and date (columns ticker, date and OHLCV)."""
        rows = await self._conn.fetch(
            """SELECT ticker, date, open, high, low, close, volume FROM visible_bars
               WHERE date BETWEEN $1 AND $2 AND open IS NOT NULL AND high IS NOT NULL
                 AND low IS NOT NULL
                 AND ticker IN (SELECT ticker FROM visible_bars
                                WHERE date = $2 AND open IS NOT NULL)
               ORDER BY ticker, date""",
            start,
            end,
        )
        return pd.DataFrame([tuple(r) for r in rows], columns=list(rows[0].keys()) if rows else [])

    async def record_import(
        self, ticker: str, filename: str, rows: int, counts: UpsertCounts
    ) -> None:
        """Log one CSV import of a user's bars (what came in, and what it changed)."""
        await self._conn.execute(
            "INSERT INTO bar_imports (ticker, filename, rows, inserted, updated) "
            "VALUES ($1, $2, $3, $4, $5)",
            ticker,
            filename,
            rows,
            counts.inserted,
            counts.updated,
        )

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
                   SELECT date, open, high, low, close, volume FROM visible_bars
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
