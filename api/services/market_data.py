"""Instruments, bars, indicators and patterns as the API serves them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg
import pandas as pd
from starlette.concurrency import run_in_threadpool

from api.db.market import BarRepository, InstrumentRepository, InstrumentRow, UpsertCounts
from api.errors import NotFound, Unprocessable
from api.schemas import Quote
from api.services.clock import ClockNow
from features import indicators, patterns, signals
from features.bars import normalise_ticker
from features.csv_import import parse_ohlcv_csv

DEFAULT_HISTORY_DAYS = 365


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date


@dataclass(frozen=True)
class IndicatorTable:
    ticker: str
    window: DateRange
    dates: list[date]
    results: list[indicators.IndicatorResult]
    as_of: date | None  # the newest bar the values are computed from


@dataclass(frozen=True)
class PatternTable:
    ticker: str
    window: DateRange
    hits: list[patterns.PatternHit]
    reason: str | None
    as_of: date | None  # the newest bar read


async def require_known(db: asyncpg.Connection | asyncpg.Pool, tickers: list[str]) -> None:
    """422 `unknown_ticker` naming every ticker that has no instrument (and so no bars)."""
    unknown = await InstrumentRepository(db).unknown(sorted(set(tickers)))
    if unknown:
        raise Unprocessable(
            "unknown_ticker", f"unknown ticker(s): {', '.join(unknown)}; import their bars first"
        )


class MarketDataService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def unknown(self, tickers: list[str]) -> list[str]:
        """Which of these tickers have no instrument, in the order given."""
        return await InstrumentRepository(self._pool).unknown(tickers)

    async def search(self, query: str, limit: int) -> list[asyncpg.Record]:
        return await InstrumentRepository(self._pool).search(query.strip(), limit)

    async def instrument(self, raw_ticker: str) -> asyncpg.Record:
        try:
            ticker = normalise_ticker(raw_ticker)
        except ValueError as exc:
            raise Unprocessable("invalid_ticker", str(exc)) from exc
        row = await InstrumentRepository(self._pool).get(ticker)
        if row is None:
            raise NotFound("ticker", f"no instrument {ticker!r}; search with /api/v1/stocks?q=")
        return row

    async def _bars_until(self, ticker: str, end: date) -> pd.DataFrame:
        async with self._pool.acquire() as conn:
            return await BarRepository(conn).history(ticker, end)

    async def resolve_range(self, ticker: str, start: date | None, end: date | None) -> DateRange:
        """Fill defaults (last year of data) and refuse empty or inverted ranges. A range ends
        at the newest bar at most (under a replay: the replay day's), so no answer names a day
        the market has not reached."""
        row = await self.instrument(ticker)
        last = row["last_date"]
        if last is None:
            raise NotFound("bars", f"{row['ticker']} has no bars yet")
        end = min(end or last, last)
        start = start or end - timedelta(days=DEFAULT_HISTORY_DAYS)
        if start > end:
            raise Unprocessable("invalid_range", f"start {start} is after end {end}")
        return DateRange(start, end)

    async def history(self, ticker: str, window: DateRange) -> pd.DataFrame:
        """The bars inside `window` (only those are read: a quote needs a year, not decades)."""
        async with self._pool.acquire() as conn:
            return await BarRepository(conn).history(ticker, window.end, start=window.start)

    async def quote(self, raw_ticker: str, clock: ClockNow) -> Quote:
        """The latest bar, its change on the previous close, and the 52-week range; `clock`
        (the request's reading) says whether that bar is stale."""
        window = await self.resolve_range(raw_ticker, None, None)
        ticker = raw_ticker.upper()
        bars = await self.history(ticker, window)
        last = bars.iloc[-1]
        previous = float(bars["close"].iloc[-2]) if len(bars) > 1 else None
        year = bars.loc[bars.index[-1] - pd.Timedelta(weeks=52) :]

        def value(name: str) -> float | None:
            return None if pd.isna(last[name]) else float(last[name])

        close = float(last["close"])
        day = bars.index[-1].date()
        return Quote(
            ticker=ticker,
            date=day,
            close=close,
            previous_close=previous,
            change=None if previous is None else close - previous,
            change_pct=None if previous is None else close / previous - 1,
            open=value("open"),
            high=value("high"),
            low=value("low"),
            volume=value("volume"),
            week52_high=float(year["high"].fillna(year["close"]).max()),
            week52_low=float(year["low"].fillna(year["close"]).min()),
            as_of=day,
            stale=clock.stale(day),
        )

    async def signal_summary(
        self, raw_ticker: str, end: date | None
    ) -> tuple[pd.DataFrame, dict[str, signals.Verdict]]:
        """All bars up to `end` (default: the newest) and the trend, momentum, volatility and
        volume verdicts read from them; 422 when there is too little history."""
        window = await self.resolve_range(raw_ticker, None, end)
        bars = await self.history(raw_ticker.upper(), DateRange(date(1900, 1, 1), window.end))
        try:
            return bars, signals.summary(bars)
        except ValueError as exc:
            raise Unprocessable("not_enough_history", str(exc)) from exc

    async def indicators(self, ticker: str, names: list[str], window: DateRange) -> IndicatorTable:
        try:
            calls = [indicators.parse(name) for name in names]
        except indicators.IndicatorError as exc:
            raise Unprocessable("invalid_indicator", str(exc)) from exc
        # Compute over all history up to `end` so values at `start` are warmed up, then slice.
        bars = await self._bars_until(ticker, window.end)
        results = await run_in_threadpool(_compute_sliced, bars, calls, window)
        dates = [d.date() for d in bars.loc[pd.Timestamp(window.start) :].index]
        return IndicatorTable(ticker, window, dates, results, _newest(bars))

    async def patterns(self, ticker: str, names: list[str], window: DateRange) -> PatternTable:
        try:
            wanted = patterns.validate_names(names)
        except ValueError as exc:
            raise Unprocessable("invalid_pattern", str(exc)) from exc
        bars = await self._bars_until(ticker, window.end)
        in_window = bars.loc[pd.Timestamp(window.start) :]
        reason = indicators.missing_reason(frozenset({"open", "high", "low", "close"}), in_window)
        if reason:
            return PatternTable(ticker, window, [], reason, _newest(bars))
        hits, reason = await run_in_threadpool(patterns.detect, bars, wanted or None)
        start = pd.Timestamp(window.start)
        hits = [h for h in hits if h.date >= start]
        return PatternTable(ticker, window, hits, reason, _newest(bars))

    async def scan_pattern(
        self, pattern: str, on: date | None
    ) -> tuple[date, int, list[tuple[str, patterns.PatternHit]]]:
        """(date, instruments scanned, hits on that date) for one pattern across all
        instruments with full OHLC; TA-Lib needs some bars before the date to judge it. A date
        after the newest OHLC bar (under a replay: the replay day's) scans that bar's day."""
        async with self._pool.acquire() as conn:
            repo = BarRepository(conn)
            newest = await repo.last_ohlc_date()
            if newest is None:
                raise NotFound("bars", "no OHLC bars stored")
            day = min(on or newest, newest)
            frame = await repo.full_ohlc(day - timedelta(days=60), day)
        hits: list[tuple[str, patterns.PatternHit]] = []
        scanned = 0
        for ticker, bars in frame.groupby("ticker") if len(frame) else []:
            scanned += 1
            ohlc = bars.set_index(pd.to_datetime(bars["date"]))[
                ["open", "high", "low", "close", "volume"]
            ]
            found, _ = await run_in_threadpool(patterns.detect, ohlc, [pattern])
            hits += [(str(ticker), h) for h in found if h.date.date() == day]
        return day, scanned, hits

    async def import_csv(
        self,
        raw_ticker: str,
        content: bytes,
        filename: str,
        name: str | None,
        sector: str | None,
    ) -> tuple[int, UpsertCounts]:
        """Validate every row, then write all bars in one transaction (or nothing)."""
        try:
            ticker = normalise_ticker(raw_ticker)
        except ValueError as exc:
            raise Unprocessable("invalid_ticker", str(exc)) from exc
        parsed = await run_in_threadpool(parse_ohlcv_csv, content, ticker, f"import:{filename}")
        if not parsed.ok:
            raise Unprocessable(
                "invalid_csv",
                f"{len(parsed.errors)} problem(s) in {filename}; nothing was imported",
                errors=[e.__dict__ for e in parsed.errors],
            )
        async with self._pool.acquire() as conn, conn.transaction():
            await InstrumentRepository(conn).ensure(
                InstrumentRow(ticker, name or ticker, "user", sector, "import")
            )
            repo = BarRepository(conn)
            counts = await repo.upsert(parsed.bars)
            await repo.record_import(ticker, filename, len(parsed.bars), counts)
        return len(parsed.bars), counts


def _newest(bars: pd.DataFrame) -> date | None:
    """The date of the newest bar of a frame indexed by date (None when it is empty)."""
    return bars.index[-1].date() if len(bars) else None


def _compute_sliced(
    bars: pd.DataFrame, calls: list[indicators.IndicatorCall], window: DateRange
) -> list[indicators.IndicatorResult]:
    start = pd.Timestamp(window.start)
    in_window = bars.loc[start:]
    results = []
    for call in calls:
        reason = indicators.missing_reason(call.requires, in_window)
        result = (
            indicators.IndicatorResult(call.name, call.function, None, reason)
            if reason
            else indicators.compute(bars, call)
        )
        if result.outputs is not None:
            outputs = {k: v.loc[start:] for k, v in result.outputs.items()}
            result = indicators.IndicatorResult(call.name, call.function, outputs)
        results.append(result)
    return results
