"""/api/v1/portfolio: several portfolios per user, their transactions, positions, CSV import
and export, and watchlists.

Ownership is one dependency (`OwnedPortfolio`): a portfolio that is not the caller's answers
404, exactly like one that does not exist. API keys need `read:portfolio` to read here and
`write:portfolio` to change anything.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from api.db.portfolios import (
    PortfolioRepository,
    PortfolioRow,
    TransactionRepository,
    TransactionRow,
    set_watchlist_tickers,
    watchlists_of,
)
from api.deps import NotifierDep, Offset, PoolDep, PrincipalDep, require_scope
from api.errors import ProblemError, problems
from api.schemas import Day, PlainDecimal, RequestModel
from api.services.alerts import Notifier
from api.services.market_data import require_known
from api.services.portfolios import (
    MAX_CSV_BYTES,
    PortfolioAnalytics,
    PortfolioService,
    TransactionIn,
)
from features.bars import normalise_ticker

ACCESS = require_scope("read:portfolio", write="write:portfolio")
router = APIRouter(prefix="/api/v1/portfolio", tags=["portfolio"], dependencies=[ACCESS])


class PortfolioIn(RequestModel):
    name: str = Field(min_length=1, max_length=80, examples=["Retirement"])

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Retirement"}]})


class PortfolioOut(BaseModel):
    id: uuid.UUID
    name: str
    base_currency: str
    created_at: datetime
    updated_at: datetime


class TransactionOut(BaseModel):
    id: uuid.UUID
    type: str
    date: date
    ticker: str | None
    quantity: PlainDecimal
    price: PlainDecimal
    amount: PlainDecimal
    fee: PlainDecimal
    note: str
    created_at: datetime


class TransactionPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TransactionOut]


class PositionOut(BaseModel):
    ticker: str
    quantity: PlainDecimal
    cost_basis: PlainDecimal
    average_cost: PlainDecimal | None
    last_price: float | None
    price_date: date | None
    market_value: PlainDecimal | None
    unrealised_pnl: PlainDecimal | None
    realised_pnl: PlainDecimal
    dividends: PlainDecimal
    weight: float | None = Field(description="share of the portfolio's value, cash included")


class PositionsOut(BaseModel):
    portfolio_id: uuid.UUID
    as_of: date | None
    cash: PlainDecimal
    invested: PlainDecimal = Field(description="deposits minus withdrawals")
    market_value: PlainDecimal = Field(description="holdings at their last close, plus cash")
    realised_pnl: PlainDecimal
    unrealised_pnl: PlainDecimal
    positions: list[PositionOut]


class ImportOut(BaseModel):
    imported: int


def _portfolio_out(row: PortfolioRow) -> PortfolioOut:
    return PortfolioOut(
        id=row.id,
        name=row.name,
        base_currency=row.base_currency,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _tx_out(row: TransactionRow) -> TransactionOut:
    return TransactionOut(**{k: getattr(row, k) for k in TransactionOut.model_fields})


async def owned_portfolio(
    portfolio_id: uuid.UUID, principal: PrincipalDep, pool: PoolDep
) -> PortfolioRow:
    """The caller's portfolio, or 404 — whoever else it may belong to."""
    row = await PortfolioRepository(pool).owned(portfolio_id, principal.user_id)
    if row is None:
        raise ProblemError(404, "portfolio_not_found", "no such portfolio")
    return row


OwnedPortfolio = Annotated[PortfolioRow, Depends(owned_portfolio)]


def get_service(pool: PoolDep) -> PortfolioService:
    return PortfolioService(pool)


ServiceDep = Annotated[PortfolioService, Depends(get_service)]


@router.post("", response_model=PortfolioOut, status_code=201, responses=problems(409))
async def create_portfolio(
    body: PortfolioIn, principal: PrincipalDep, service: ServiceDep
) -> PortfolioOut:
    """A new, empty portfolio (base currency USD); names are unique per user."""
    return _portfolio_out(await service.create(principal.user_id, body.name))


@router.get("", response_model=list[PortfolioOut])
async def list_portfolios(principal: PrincipalDep, pool: PoolDep) -> list[PortfolioOut]:
    """Your portfolios, oldest first."""
    return [_portfolio_out(r) for r in await PortfolioRepository(pool).of_user(principal.user_id)]


@router.get("/{portfolio_id}", response_model=PortfolioOut)
async def get_portfolio(portfolio: OwnedPortfolio) -> PortfolioOut:
    """One of your portfolios."""
    return _portfolio_out(portfolio)


@router.patch("/{portfolio_id}", response_model=PortfolioOut, responses=problems(409))
async def rename_portfolio(
    body: PortfolioIn, portfolio: OwnedPortfolio, service: ServiceDep
) -> PortfolioOut:
    """Rename a portfolio."""
    return _portfolio_out(await service.rename(portfolio, body.name))


@router.delete("/{portfolio_id}", status_code=204)
async def delete_portfolio(portfolio: OwnedPortfolio, pool: PoolDep) -> None:
    """Delete the portfolio and its whole ledger."""
    await PortfolioRepository(pool).delete(portfolio.id)


async def _announce(
    notifier: Notifier, portfolio: PortfolioRow, event: str, title: str, **data: Any
) -> None:
    """A live portfolio event for the owner's other devices (`/ws/notifications`)."""
    message = {
        "type": "notification",
        "kind": "portfolio",
        "title": f"{portfolio.name}: {title}",
        "data": {"portfolio_id": str(portfolio.id), "event": event, **data},
        "created_at": datetime.now(UTC).isoformat(),
    }
    await notifier.push([(portfolio.user_id, message)])


@router.post(
    "/{portfolio_id}/transactions",
    response_model=TransactionOut,
    status_code=201,
    responses={
        200: {
            "model": TransactionOut,
            "description": "A retry with the same Idempotency-Key: the first result, with "
            "`Idempotent-Replayed: true`",
        },
        **problems(409),
    },
)
async def add_transaction(
    body: TransactionIn,
    portfolio: OwnedPortfolio,
    service: ServiceDep,
    notifier: NotifierDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=8,
            max_length=100,
            description="retries with the same key return the first result instead of repeating it",
        ),
    ] = None,
) -> TransactionOut:
    """Record a buy, sell, dividend, deposit, withdrawal or fee. A sell larger than the holding
    at its date is refused (422 `oversold`), and so is a withdrawal larger than the cash at its
    date (422 `insufficient_cash`), also when requests race. Quantities, prices and amounts are
    decimals from 0 to 10^12 with at most 10 decimal places, answered in positional notation."""
    row, created = await service.add(portfolio, body, idempotency_key)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        title = f"{row.type} {row.ticker or ''} recorded".replace("  ", " ")
        await _announce(notifier, portfolio, "transaction_added", title, transaction_id=str(row.id))
    return _tx_out(row)


@router.get("/{portfolio_id}/transactions", response_model=TransactionPage)
async def list_transactions(
    portfolio: OwnedPortfolio,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> TransactionPage:
    """Newest first."""
    rows, total = await TransactionRepository(pool).page(portfolio.id, limit, offset)
    return TransactionPage(
        total=total, limit=limit, offset=offset, items=[_tx_out(r) for r in rows]
    )


@router.delete("/{portfolio_id}/transactions/{transaction_id}", status_code=204)
async def delete_transaction(
    transaction_id: uuid.UUID, portfolio: OwnedPortfolio, service: ServiceDep, notifier: NotifierDep
) -> None:
    """Remove a mistaken entry (refused if a later sell would then exceed the holding)."""
    await service.remove(portfolio, transaction_id)
    await _announce(
        notifier,
        portfolio,
        "transaction_removed",
        "transaction removed",
        transaction_id=str(transaction_id),
    )


@router.post(
    "/{portfolio_id}/transactions/import",
    response_model=ImportOut,
    status_code=201,
    responses=problems(413),
)
async def import_transactions(
    file: UploadFile, portfolio: OwnedPortfolio, service: ServiceDep, notifier: NotifierDep
) -> ImportOut:
    """CSV with `date,type,ticker,quantity,price,amount,fee,note`; all rows or none, every
    error with its line number."""
    content = await file.read(MAX_CSV_BYTES + 1)
    imported = len(await service.import_csv(portfolio, content))
    title = f"{imported} transactions imported"
    await _announce(notifier, portfolio, "transactions_imported", title, imported=imported)
    return ImportOut(imported=imported)


@router.get(
    "/{portfolio_id}/transactions/export",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/csv": {
                    "example": "date,type,ticker,quantity,price,"
                    "amount,fee,note\n2022-01-03,deposit,,,,5000,,\n"
                }
            }
        }
    },
)
async def export_transactions(portfolio: OwnedPortfolio, service: ServiceDep) -> Response:
    """The whole ledger as CSV, in the import format."""
    return Response(
        await service.export_csv(portfolio),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="portfolio-{portfolio.id}.csv"'},
    )


@router.get("/{portfolio_id}/positions", response_model=PositionsOut)
async def positions(
    portfolio: OwnedPortfolio,
    service: ServiceDep,
    as_of: Annotated[Day | None, Query(description="value the portfolio at this date")] = None,
) -> PositionsOut:
    """Holdings from FIFO lots: quantity, cost basis, realised and unrealised P&L, and cash."""
    value = await service.valuation(portfolio, as_of)
    return PositionsOut(
        portfolio_id=portfolio.id,
        as_of=as_of,
        cash=value.cash,
        invested=value.invested,
        market_value=value.market_value,
        realised_pnl=value.realised_pnl,
        unrealised_pnl=value.unrealised_pnl,
        positions=[
            PositionOut(
                **{k: getattr(v, k) for k in PositionOut.model_fields if k != "weight"},
                weight=value.weight(v),
            )
            for v in value.positions
        ],
    )


class ValuePoint(BaseModel):
    date: date
    value: float
    flow: float = Field(description="money put in (+) or taken out (−) that day")


class PeriodOut(BaseModel):
    period: str
    start: date
    end: date
    time_weighted: float
    money_weighted: float | None = Field(description="XIRR, annualised")
    benchmark: float | None = Field(description="S&P 500 over the same days")
    excess: float | None


class PerformanceOut(BaseModel):
    holdings_only: bool | None = Field(
        description="no deposits or withdrawals recorded: buys count as money in, sells and "
        "dividends as money out, and cash is left out of the value"
    )
    benchmark: str
    history: list[ValuePoint]
    periods: list[PeriodOut]


class RiskMetrics(BaseModel):
    days: int
    volatility: float = Field(description="annualised standard deviation of daily returns")
    beta: float | None = Field(description="against the S&P 500")
    sharpe: float | None = Field(description="annualised, risk-free rate 0")
    sortino: float | None
    max_drawdown: float
    var_95: float = Field(description="one-day historical value at risk, 95%, as a loss")
    cvar_95: float = Field(description="one-day expected shortfall beyond the VaR, 95%")


class RiskOut(BaseModel):
    metrics: RiskMetrics
    correlation: dict[str, dict[str, float | None]]
    allocation: dict[str, float] = Field(description="share of value by sector (and cash)")


class OptimizeOut(BaseModel):
    method: str
    weights: dict[str, float]
    in_sample: dict[str, float]
    note: str


def get_analytics(pool: PoolDep) -> PortfolioAnalytics:
    return PortfolioAnalytics(pool)


AnalyticsDep = Annotated[PortfolioAnalytics, Depends(get_analytics)]


@router.get("/{portfolio_id}/performance", response_model=PerformanceOut)
async def performance(portfolio: OwnedPortfolio, analytics: AnalyticsDep) -> PerformanceOut:
    """Daily value, and time- and money-weighted returns for 1D/1W/1M/YTD/1Y/Max against the
    S&P 500 (trading days from the NYSE calendar)."""
    found = await analytics.performance(portfolio)
    return PerformanceOut(
        holdings_only=found["holdings_only"],
        benchmark=found["benchmark"],
        history=[ValuePoint(**p) for p in found["history"]],
        periods=[PeriodOut(**vars(p)) for p in found["periods"]],
    )


@router.get("/{portfolio_id}/risk", response_model=RiskOut)
async def risk(
    portfolio: OwnedPortfolio,
    analytics: AnalyticsDep,
    lookback_days: Annotated[int, Query(ge=20, le=2520)] = 252,
) -> RiskOut:
    """Volatility, beta, Sharpe, Sortino, max drawdown, VaR/CVaR 95%, correlation of holdings
    and allocation by sector, over the last `lookback_days` trading days."""
    found = await analytics.risk(portfolio, lookback_days)
    return RiskOut(
        metrics=RiskMetrics(**vars(found["metrics"])),
        correlation=found["correlation"],
        allocation=found["allocation"],
    )


@router.get("/{portfolio_id}/optimize", response_model=OptimizeOut)
async def optimize(
    portfolio: OwnedPortfolio,
    analytics: AnalyticsDep,
    method: Annotated[
        Literal["min_variance", "max_sharpe", "hrp"],
        Query(
            description="minimum variance, maximum Sharpe (mean-risk), or hierarchical risk parity"
        ),
    ] = "min_variance",
    lookback_days: Annotated[int, Query(ge=60, le=2520)] = 504,
) -> OptimizeOut:
    """Suggested weights for the current holdings (skfolio). Not financial advice."""
    return OptimizeOut(**await analytics.optimize(portfolio, method, lookback_days))


# Declared on its own router and included before `router`, so `/watchlists` is never taken for
# a portfolio id.
watchlists = APIRouter(
    prefix="/api/v1/portfolio/watchlists", tags=["portfolio"], dependencies=[ACCESS]
)


class WatchlistIn(RequestModel):
    name: str = Field(min_length=1, max_length=80, examples=["Tech to watch"])
    tickers: list[str] = Field(default_factory=list, max_length=200)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Tech to watch", "tickers": ["AAPL", "MSFT"]}]}
    )


class WatchlistOut(BaseModel):
    id: uuid.UUID
    name: str
    tickers: list[str]
    created_at: datetime


async def _watchlist_out(
    pool: PoolDep, user_id: uuid.UUID, watchlist_id: uuid.UUID
) -> WatchlistOut:
    (row,) = await watchlists_of(pool, user_id, watchlist_id)
    return WatchlistOut(**dict(row))


async def _known(pool: PoolDep, raw: list[str]) -> list[str]:
    try:
        tickers = sorted({normalise_ticker(t) for t in raw})
    except ValueError as exc:
        raise ProblemError(422, "invalid_ticker", str(exc)) from exc
    await require_known(pool, tickers)
    return tickers


@watchlists.post("", response_model=WatchlistOut, status_code=201, responses=problems(409))
async def create_watchlist(
    body: WatchlistIn, principal: PrincipalDep, pool: PoolDep
) -> WatchlistOut:
    """A named list of known tickers."""
    tickers = await _known(pool, body.tickers)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO watchlists (id, user_id, name) VALUES ($1, $2, $3)
               ON CONFLICT (user_id, name) DO NOTHING RETURNING id, name, created_at""",
            uuid.uuid4(),
            principal.user_id,
            body.name.strip(),
        )
        if row is None:
            raise ProblemError(
                409, "name_taken", f"you already have a watchlist named {body.name!r}"
            )
        await set_watchlist_tickers(conn, row["id"], tickers)
    return await _watchlist_out(pool, principal.user_id, row["id"])


@watchlists.get("", response_model=list[WatchlistOut])
async def list_watchlists(principal: PrincipalDep, pool: PoolDep) -> list[WatchlistOut]:
    """Your watchlists with their tickers."""
    return [WatchlistOut(**dict(r)) for r in await watchlists_of(pool, principal.user_id)]


async def _owned_watchlist(
    watchlist_id: uuid.UUID, principal: PrincipalDep, pool: PoolDep
) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT id, user_id FROM watchlists WHERE id = $1 AND user_id = $2",
        watchlist_id,
        principal.user_id,
    )
    if row is None:
        raise ProblemError(404, "watchlist_not_found", "no such watchlist")
    return row


OwnedWatchlist = Annotated[asyncpg.Record, Depends(_owned_watchlist)]


@watchlists.put("/{watchlist_id}", response_model=WatchlistOut, responses=problems(409))
async def replace_watchlist(
    body: WatchlistIn, watchlist: OwnedWatchlist, pool: PoolDep
) -> WatchlistOut:
    """Rename and set the tickers (the list replaces the old one)."""
    tickers = await _known(pool, body.tickers)
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute(
                "UPDATE watchlists SET name = $2 WHERE id = $1", watchlist["id"], body.name.strip()
            )
        except asyncpg.UniqueViolationError as exc:
            raise ProblemError(
                409, "name_taken", f"you already have a watchlist named {body.name!r}"
            ) from exc
        await set_watchlist_tickers(conn, watchlist["id"], tickers)
    return await _watchlist_out(pool, watchlist["user_id"], watchlist["id"])


@watchlists.delete("/{watchlist_id}", status_code=204)
async def delete_watchlist(watchlist: OwnedWatchlist, pool: PoolDep) -> None:
    """Delete a watchlist."""
    await pool.execute("DELETE FROM watchlists WHERE id = $1", watchlist["id"])
