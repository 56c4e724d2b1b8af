"""Portfolios as the API serves them: the ledger (with idempotent, oversell-proof writes), CSV
import and export, and positions valued at the latest close.

Writes to one portfolio are serialised by a row lock on the portfolio (`SELECT … FOR UPDATE`),
and every write replays the whole ledger with the new entries before it commits, so a sell can
never exceed what is held at its date — whether requests race or a back-dated sell arrives.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal, Self

import asyncpg
import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, ValidationError, model_validator

from api.db.portfolios import (
    PortfolioRepository,
    PortfolioRow,
    TransactionRepository,
    TransactionRow,
)
from api.errors import ProblemError, Unprocessable
from api.schemas import EARLIEST_DAY, MAX_DECIMAL, Amount, Day, RequestModel, plain_decimal
from api.security.input_guard import text_problem
from api.services.ledger import ZERO, Book, Entry, InsufficientCash, Oversold, replay
from api.services.market_data import require_known
from api.services.performance import (
    daily_returns,
    period_return,
    risk_report,
    tracks_cash,
    value_history,
)
from features.bars import normalise_ticker
from features.csv_import import CsvSyntaxError, csv_rows, decode_csv

MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_CSV_ROWS = 20_000
CSV_COLUMNS = ("date", "type", "ticker", "quantity", "price", "amount", "fee", "note")

TransactionType = Literal["buy", "sell", "dividend", "deposit", "withdraw", "fee"]


class TransactionIn(RequestModel):
    """A buy or sell needs ticker, quantity and price (fee optional); a dividend a ticker and
    an amount; a deposit, withdrawal or fee an amount and no ticker. `quantity × price` stands
    in for a missing amount."""

    type: TransactionType
    date: Day
    ticker: str | None = Field(default=None, max_length=15)
    quantity: Amount | None = Field(default=None, gt=0)
    price: Amount | None = None
    amount: Amount | None = Field(default=None, gt=0)
    fee: Amount = ZERO
    note: str = Field(default="", max_length=200)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "buy",
                    "ticker": "AAPL",
                    "quantity": "10",
                    "price": "150.25",
                    "date": "2022-03-01",
                    "fee": "1",
                },
                {"type": "deposit", "amount": "10000", "date": "2022-01-03"},
            ]
        }
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.date > date.today():
            raise ValueError("date must not be in the future")
        if self.type in ("buy", "sell", "dividend"):
            if not self.ticker:
                raise ValueError(f"a {self.type} needs a ticker")
            self.ticker = normalise_ticker(self.ticker)
        elif self.ticker:
            raise ValueError(f"a {self.type} has no ticker")
        if self.type in ("buy", "sell"):
            if self.quantity is None or self.price is None or self.price == 0:
                raise ValueError(f"a {self.type} needs quantity and a positive price")
        elif self.amount is None:
            if self.quantity is None or self.price is None:
                raise ValueError(f"a {self.type} needs an amount")
            self.amount = self.quantity * self.price
            if self.amount > MAX_DECIMAL:
                raise ValueError(f"quantity × price must not exceed {MAX_DECIMAL:f}")
        return self

    def entry(self) -> Entry:
        trade = self.type in ("buy", "sell")
        return Entry(
            self.type,
            self.date,
            self.ticker,
            self.quantity if trade else ZERO,
            self.price if trade else ZERO,
            ZERO if trade else (self.amount or ZERO),
            self.fee if trade else ZERO,
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()


@dataclass(frozen=True)
class PositionView:
    ticker: str
    quantity: Decimal
    cost_basis: Decimal
    average_cost: Decimal | None
    last_price: float | None
    price_date: date | None
    market_value: Decimal | None
    unrealised_pnl: Decimal | None
    realised_pnl: Decimal
    dividends: Decimal


@dataclass(frozen=True)
class Valuation:
    """A portfolio's positions at their last close, and the totals over them and cash."""

    cash: Decimal
    invested: Decimal  # deposits minus withdrawals
    market_value: Decimal  # holdings at their last close, plus cash
    realised_pnl: Decimal
    unrealised_pnl: Decimal
    positions: list[PositionView]

    def weight(self, view: PositionView) -> float | None:
        """The position's share of the portfolio's value, cash included."""
        if view.market_value is None or not self.market_value:
            return None
        return float(view.market_value / self.market_value)


def _refused(exc: Oversold | InsufficientCash, line: int | None = None) -> ProblemError:
    """The 422 for a write the ledger cannot take (an oversell, or cash it does not hold)."""
    where = f"line {line}: " if line is not None else ""
    if isinstance(exc, InsufficientCash):
        return Unprocessable("insufficient_cash", f"{where}{exc}", cash=plain_decimal(exc.cash))
    return Unprocessable("oversold", f"{where}{exc}", held=plain_decimal(exc.held))


class PortfolioService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ portfolios

    async def create(self, user_id: uuid.UUID, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).create(user_id, name.strip())
        if row is None:
            raise ProblemError(409, "name_taken", f"you already have a portfolio named {name!r}")
        return row

    async def rename(self, portfolio: PortfolioRow, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).rename(portfolio.id, name.strip())
        if row is None:
            raise ProblemError(409, "name_taken", f"you already have a portfolio named {name!r}")
        return row

    # ------------------------------------------------------------------ writes

    async def add(
        self, portfolio: PortfolioRow, tx: TransactionIn, idempotency_key: str | None
    ) -> tuple[TransactionRow, bool]:
        """Record one transaction; (row, created). A retried request with the same
        Idempotency-Key returns the first result; the same key with another body is refused."""
        fingerprint = tx.fingerprint()
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            repo = TransactionRepository(conn)
            if idempotency_key is not None:
                earlier = await repo.by_idempotency_key(portfolio.id, idempotency_key)
                if earlier is not None:
                    row, seen = earlier
                    if seen != fingerprint:
                        raise ProblemError(
                            409,
                            "idempotency_key_reused",
                            "this Idempotency-Key was used for a different transaction",
                        )
                    return row, False
            await require_known(conn, [tx.ticker] if tx.ticker else [])
            ledger = await repo.ledger(portfolio.id)
            try:
                replay([*(t.entry() for t in ledger), _last(tx.entry(), ledger)], check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc) from exc
            row = await repo.insert(portfolio.id, tx.entry(), tx.note, idempotency_key, fingerprint)
        return row, True

    async def remove(self, portfolio: PortfolioRow, transaction_id: uuid.UUID) -> None:
        """Delete a transaction unless that would leave a later sell without shares."""
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            repo = TransactionRepository(conn)
            ledger = await repo.ledger(portfolio.id)
            if not any(t.id == transaction_id for t in ledger):
                raise ProblemError(404, "transaction_not_found", "no such transaction")
            try:
                replay((t.entry() for t in ledger if t.id != transaction_id), check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc) from exc
            await repo.delete(portfolio.id, transaction_id)

    async def import_csv(self, portfolio: PortfolioRow, content: bytes) -> list[TransactionRow]:
        """All rows or none: every row is validated (errors carry their line number), then the
        whole ledger is replayed with them before anything is written."""
        parsed = parse_transactions_csv(content)
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            await require_known(conn, [tx.ticker for _, tx in parsed if tx.ticker])
            repo = TransactionRepository(conn)
            ledger = await repo.ledger(portfolio.id)
            top = max((t.sequence for t in ledger), default=0)
            entries = [t.entry() for t in ledger]
            lines: dict[int, int] = {}
            for i, (line, tx) in enumerate(parsed, start=1):
                entries.append(_with_sequence(tx.entry(), top + i))
                lines[top + i] = line
            try:
                replay(entries, check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc, lines.get(exc.entry.sequence)) from exc
            return [await repo.insert(portfolio.id, tx.entry(), tx.note) for _, tx in parsed]

    # ------------------------------------------------------------------ reads

    async def book(self, portfolio: PortfolioRow, until: date | None = None) -> Book:
        ledger = await TransactionRepository(self._pool).ledger(portfolio.id)
        return replay((t.entry() for t in ledger), until)

    async def positions(
        self, portfolio: PortfolioRow, as_of: date | None = None
    ) -> tuple[Book, list[PositionView]]:
        book = await self.book(portfolio, as_of)
        held = [p for p in book.positions.values() if p.quantity > 0 or p.realised or p.dividends]
        prices = await self._last_prices([p.ticker for p in held], as_of)
        views = []
        for p in sorted(held, key=lambda p: p.ticker):
            price, when = prices.get(p.ticker, (None, None))
            value = None if price is None else p.quantity * Decimal(str(price))
            views.append(
                PositionView(
                    ticker=p.ticker,
                    quantity=p.quantity,
                    cost_basis=p.cost_basis,
                    average_cost=p.cost_basis / p.quantity if p.quantity else None,
                    last_price=price,
                    price_date=when,
                    market_value=value,
                    unrealised_pnl=None if value is None else value - p.cost_basis,
                    realised_pnl=p.realised,
                    dividends=p.dividends,
                )
            )
        return book, views

    async def valuation(self, portfolio: PortfolioRow, as_of: date | None = None) -> Valuation:
        book, views = await self.positions(portfolio, as_of)
        holdings = sum((v.market_value or ZERO for v in views), ZERO)
        return Valuation(
            cash=book.cash,
            invested=book.deposits - book.withdrawals,
            market_value=holdings + book.cash,
            realised_pnl=sum((v.realised_pnl for v in views), ZERO),
            unrealised_pnl=sum((v.unrealised_pnl or ZERO for v in views), ZERO),
            positions=views,
        )

    async def _last_prices(
        self, tickers: list[str], as_of: date | None
    ) -> dict[str, tuple[float, date]]:
        rows = await self._pool.fetch(
            """SELECT t.ticker, b.close, b.date FROM unnest($1::text[]) AS t(ticker)
               CROSS JOIN LATERAL (SELECT close, date FROM bars WHERE ticker = t.ticker
                                   AND ($2::date IS NULL OR date <= $2)
                                   ORDER BY date DESC LIMIT 1) b""",
            tickers,
            as_of,
        )
        return {r["ticker"]: (r["close"], r["date"]) for r in rows}

    async def export_csv(self, portfolio: PortfolioRow) -> str:
        """The ledger in the import format: every field quoted, CRLF line ends, numbers in
        positional notation and notes neutralised against spreadsheet formulas, so the file
        opens safely and imports back to the same ledger."""
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for t in await TransactionRepository(self._pool).ledger(portfolio.id):
            trade = t.type in ("buy", "sell")
            writer.writerow(
                [
                    t.date.isoformat(),
                    t.type,
                    t.ticker or "",
                    plain_decimal(t.quantity) if trade else "",
                    plain_decimal(t.price) if trade else "",
                    "" if trade else plain_decimal(t.amount),
                    plain_decimal(t.fee) if trade and t.fee else "",
                    formula_safe(t.note),
                ]
            )
        return out.getvalue()


def _last(entry: Entry, ledger: list[TransactionRow]) -> Entry:
    """The new entry, ordered after everything already recorded on its date."""
    return _with_sequence(entry, max((t.sequence for t in ledger), default=0) + 1)


def _with_sequence(entry: Entry, sequence: int) -> Entry:
    return replace(entry, sequence=sequence)


# OWASP CSV injection: a cell starting with one of these is read as a formula by spreadsheets.
# The export prefixes such a cell with a quote (also one that already starts with quotes then a
# trigger, so the escape can be undone); the import removes exactly that one quote.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def formula_safe(text: str) -> str:
    return "'" + text if _FORMULA.match(text) else text


def formula_unsafe(text: str) -> str:
    """Undo `formula_safe` (a cell a spreadsheet saved as text keeps its leading quote)."""
    return text[1:] if text.startswith("'") and _FORMULA.match(text[1:]) else text


def parse_transactions_csv(content: bytes) -> list[tuple[int, TransactionIn]]:
    """(line number, transaction) for every row; any bad row refuses the whole file, listing
    every error with its line (the header is line 1; a record spanning lines counts from its
    first). Malformed CSV is a 422 naming its line, never a server error."""
    if len(content) > MAX_CSV_BYTES:
        raise ProblemError(413, "file_too_large", f"CSV larger than {MAX_CSV_BYTES} bytes")
    try:
        records = list(csv_rows(decode_csv(content)))
    except CsvSyntaxError as exc:
        line = {"line": exc.line, "message": exc.message}
        raise Unprocessable("invalid_csv", str(exc), errors=[line]) from exc
    except ValueError as exc:
        raise Unprocessable("invalid_csv", str(exc)) from exc
    header = [h.strip().lower() for h in records[0][1]] if records else []
    missing = [c for c in ("date", "type") if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise Unprocessable(
            "invalid_csv",
            f"header must use the columns {', '.join(CSV_COLUMNS)} once each"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
        )
    rows: list[tuple[int, TransactionIn]] = []
    errors: list[dict[str, Any]] = []
    for line, cells in records[1:]:
        if len(rows) + len(errors) >= MAX_CSV_ROWS:
            raise Unprocessable("invalid_csv", f"at most {MAX_CSV_ROWS} rows per file")
        if not any(cell.strip() for cell in cells):
            continue
        try:
            rows.append((line, _transaction(header, cells)))
        except (ValidationError, ValueError, InvalidOperation) as exc:
            errors.append({"line": line, "message": _first_error(exc)})
    if errors:
        raise Unprocessable(
            "invalid_csv",
            f"{len(errors)} bad row(s); nothing was imported",
            errors=errors[:100],
        )
    if not rows:
        raise Unprocessable("invalid_csv", "the file has no transactions")
    return rows


def _transaction(header: list[str], cells: list[str]) -> TransactionIn:
    if len(cells) > len(header):
        raise ValueError(f"expected {len(header)} fields, got {len(cells)}")
    values = dict(zip(header, cells, strict=False))  # missing trailing fields are empty
    for column, cell in values.items():
        problem = text_problem(cell)
        if problem:
            raise ValueError(f"{column}: {problem}")
    note = formula_unsafe(values.pop("note", ""))  # kept exactly as written, spaces included
    fields: dict[str, str] = {k: v.strip() for k, v in values.items() if v.strip()}
    return TransactionIn.model_validate({**fields, **({"note": note} if note else {})})


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc)


BENCHMARK = "SPX"  # the S&P 500 index from the bundled data
PERIODS = ("1D", "1W", "1M", "YTD", "1Y", "Max")
NOT_ADVICE = (
    "Not financial advice: weights fitted to past returns of your current holdings "
    "(in-sample); past returns do not predict future ones."
)


@lru_cache(maxsize=1)
def _calendar() -> Any:
    import exchange_calendars

    # from the earliest day a transaction may carry, so any ledger can be valued
    return exchange_calendars.get_calendar("XNYS", start=EARLIEST_DAY.isoformat())


def trading_days(start: date, end: date) -> pd.DatetimeIndex:
    """NYSE sessions in [start, end] (exchange-calendars)."""
    sessions = _calendar().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return pd.DatetimeIndex(sessions.tz_localize(None) if sessions.tz else sessions)


class PortfolioAnalytics:
    """Value history, returns, risk and optimisation of one portfolio (read-only)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _entries(self, portfolio: PortfolioRow) -> list[Entry]:
        return [t.entry() for t in await TransactionRepository(self._pool).ledger(portfolio.id)]

    async def closes(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        rows = await self._pool.fetch(
            """SELECT ticker, date, close FROM bars
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

    async def _end(self) -> date:
        last = await self._pool.fetchval("SELECT max(date) FROM bars WHERE ticker = $1", BENCHMARK)
        return last or date.today()

    async def history(
        self, portfolio: PortfolioRow
    ) -> tuple[list[Entry], pd.DataFrame, pd.DataFrame] | None:
        """(entries, daily value history, daily closes incl. the benchmark), or None if empty."""
        entries = await self._entries(portfolio)
        if not entries:
            return None
        first = min(e.date for e in entries)
        end = max(await self._end(), max(e.date for e in entries))
        days = trading_days(first, end)
        if len(days) == 0:
            days = pd.DatetimeIndex([pd.Timestamp(first)])
        tickers = sorted({e.ticker for e in entries if e.ticker})
        closes = await self.closes([*tickers, BENCHMARK], first - timedelta(days=10), end)
        closes = closes.reindex(closes.index.union(days)).ffill().reindex(days)
        return entries, value_history(entries, closes, days), closes

    async def performance(self, portfolio: PortfolioRow) -> dict[str, Any]:
        found = await self.history(portfolio)
        if found is None:
            return {"holdings_only": None, "benchmark": BENCHMARK, "history": [], "periods": []}
        entries, history, closes = found
        benchmark = closes.get(BENCHMARK)
        return {
            "holdings_only": not tracks_cash(entries),
            "benchmark": BENCHMARK,
            "history": [
                {"date": d.date(), "value": round(v, 6), "flow": round(f, 6)}
                for d, v, f in history[["value", "flow"]].itertuples()
            ],
            "periods": [period_return(p, history, benchmark) for p in PERIODS],
        }

    async def risk(self, portfolio: PortfolioRow, lookback_days: int) -> dict[str, Any]:
        found = await self.history(portfolio)
        if found is None:
            raise Unprocessable("no_history", "the portfolio has no transactions yet")
        entries, history, closes = found
        returns = daily_returns(history).iloc[-lookback_days:]
        if len(returns) < 20:
            raise Unprocessable(
                "too_little_history", f"risk needs 20 trading days of value; have {len(returns)}"
            )
        bench = closes[BENCHMARK].pct_change().dropna() if BENCHMARK in closes else None
        book = replay(entries)
        held = sorted(t for t, p in book.positions.items() if p.quantity > 0)
        last = closes.iloc[-1]
        values = {t: float(book.positions[t].quantity) * float(last.get(t, np.nan)) for t in held}
        sectors = await self._sectors(held)
        allocation: dict[str, float] = {}
        for ticker, value in values.items():
            if np.isfinite(value):
                allocation[sectors.get(ticker) or "Unclassified"] = (
                    allocation.get(sectors.get(ticker) or "Unclassified", 0.0) + value
                )
        if tracks_cash(entries):
            allocation["Cash"] = float(book.cash)
        total = sum(allocation.values())
        holding_returns = closes[held].pct_change().iloc[-lookback_days:] if held else None
        correlation = (
            holding_returns.corr().round(6).where(lambda c: c.notna(), None).to_dict()
            if holding_returns is not None and len(held) > 1
            else {}
        )
        return {
            "metrics": risk_report(returns, bench),
            "correlation": correlation,
            "allocation": {k: v / total for k, v in allocation.items()} if total > 0 else {},
        }

    async def _sectors(self, tickers: list[str]) -> dict[str, str | None]:
        rows = await self._pool.fetch(
            "SELECT ticker, sector FROM instruments WHERE ticker = ANY($1::text[])", tickers
        )
        return {r["ticker"]: r["sector"] for r in rows}

    async def optimize(
        self, portfolio: PortfolioRow, method: str, lookback_days: int
    ) -> dict[str, Any]:
        """Suggested weights over the current holdings (skfolio), fitted on their past returns."""
        from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction

        book = await PortfolioService(self._pool).book(portfolio)
        held = sorted(t for t, p in book.positions.items() if p.quantity > 0)
        if len(held) < 2:
            raise Unprocessable("too_few_holdings", "optimisation needs at least two holdings")
        end = await self._end()
        closes = await self.closes(held, end - timedelta(days=int(lookback_days * 1.6) + 10), end)
        returns = closes[held].pct_change().dropna().iloc[-lookback_days:]
        if len(returns) < 60:
            raise Unprocessable(
                "too_little_history",
                f"optimisation needs 60 common trading days; have {len(returns)}",
            )
        model = {
            "min_variance": lambda: MeanRisk(),
            "max_sharpe": lambda: MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO),
            "hrp": lambda: HierarchicalRiskParity(),
        }[method]()
        model.fit(returns)
        fitted = model.predict(returns)
        weights = {t: float(w) for t, w in zip(held, model.weights_, strict=True)}
        return {
            "method": method,
            "weights": weights,
            "in_sample": {
                "annualised_return": float(fitted.annualized_mean),
                "annualised_volatility": float(fitted.annualized_standard_deviation),
                "days": len(returns),
            },
            "note": NOT_ADVICE,
        }
