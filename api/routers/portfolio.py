"""/api/v1/portfolio: several portfolios per user, their transactions, positions, CSV import
and export, and analytics (watchlists have their own router, `api.routers.watchlists`).

Ownership is one dependency (`OwnedPortfolio`): a portfolio that is not the caller's answers
404, exactly like one that does not exist. API keys need `read:portfolio` to read here and
`write:portfolio` to change anything.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, UploadFile

from api.db.portfolios import PortfolioRow
from api.deps import ClockDep, NotifierDep, Offset, PoolDep, PrincipalDep, require_scope
from api.errors import problems
from api.schemas import Day
from api.services.analytics import OptimizeOut, PerformanceOut, PortfolioAnalytics, RiskOut
from api.services.portfolio_schemas import (
    ImportOut,
    PortfolioIn,
    PortfolioOut,
    PositionsOut,
    TransactionIn,
    TransactionOut,
    TransactionPage,
)
from api.services.portfolios import PortfolioService
from api.services.transactions_csv import MAX_CSV_BYTES

ACCESS = require_scope("read:portfolio", write="write:portfolio")
router = APIRouter(prefix="/api/v1/portfolio", tags=["portfolio"], dependencies=[ACCESS])


async def get_service(pool: PoolDep) -> PortfolioService:
    return PortfolioService(pool)


ServiceDep = Annotated[PortfolioService, Depends(get_service)]


async def owned_portfolio(
    portfolio_id: uuid.UUID, principal: PrincipalDep, service: ServiceDep
) -> PortfolioRow:
    """The caller's portfolio, or 404 — whoever else it may belong to."""
    return await service.owned(portfolio_id, principal.user_id)


OwnedPortfolio = Annotated[PortfolioRow, Depends(owned_portfolio)]


@router.post("", response_model=PortfolioOut, status_code=201, responses=problems(409))
async def create_portfolio(
    body: PortfolioIn, principal: PrincipalDep, service: ServiceDep
) -> PortfolioOut:
    """A new, empty portfolio (base currency USD); names are unique per user."""
    return PortfolioOut.model_validate(await service.create(principal.user_id, body.name))


@router.get("", response_model=list[PortfolioOut])
async def list_portfolios(principal: PrincipalDep, service: ServiceDep) -> list[PortfolioOut]:
    """Your portfolios, oldest first."""
    return [PortfolioOut.model_validate(r) for r in await service.of_user(principal.user_id)]


@router.get("/{portfolio_id}", response_model=PortfolioOut)
async def get_portfolio(portfolio: OwnedPortfolio) -> PortfolioOut:
    """One of your portfolios."""
    return PortfolioOut.model_validate(portfolio)


@router.patch("/{portfolio_id}", response_model=PortfolioOut, responses=problems(409))
async def rename_portfolio(
    body: PortfolioIn, portfolio: OwnedPortfolio, service: ServiceDep
) -> PortfolioOut:
    """Rename a portfolio."""
    return PortfolioOut.model_validate(await service.rename(portfolio, body.name))


@router.delete("/{portfolio_id}", status_code=204)
async def delete_portfolio(portfolio: OwnedPortfolio, service: ServiceDep) -> None:
    """Delete the portfolio and its whole ledger."""
    await service.delete(portfolio)


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
    clock: ClockDep,
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
    date (422 `insufficient_cash`), also when requests race; so is a date after the market's
    today (the replay day while the market is replayed). Quantities, prices and amounts are
    decimals from 0 to 10^12 with at most 10 decimal places, answered in positional notation."""
    row, created = await service.add(portfolio, body, idempotency_key, clock.today)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        title = f"{row.type} {row.ticker or ''} recorded".replace("  ", " ")
        await notifier.announce(portfolio, "transaction_added", title, transaction_id=str(row.id))
    return TransactionOut.model_validate(row)


@router.get("/{portfolio_id}/transactions", response_model=TransactionPage)
async def list_transactions(
    portfolio: OwnedPortfolio,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> TransactionPage:
    """Newest first."""
    rows, total = await service.page(portfolio, limit, offset)
    items = [TransactionOut.model_validate(r) for r in rows]
    return TransactionPage(total=total, limit=limit, offset=offset, items=items)


@router.delete("/{portfolio_id}/transactions/{transaction_id}", status_code=204)
async def delete_transaction(
    transaction_id: uuid.UUID, portfolio: OwnedPortfolio, service: ServiceDep, notifier: NotifierDep
) -> None:
    """Remove a mistaken entry (refused if a later sell would then exceed the holding)."""
    await service.remove(portfolio, transaction_id)
    await notifier.announce(
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
    file: UploadFile,
    portfolio: OwnedPortfolio,
    service: ServiceDep,
    notifier: NotifierDep,
    clock: ClockDep,
) -> ImportOut:
    """CSV with `date,type,ticker,quantity,price,amount,fee,note`; all rows or none, every
    error with its line number."""
    content = await file.read(MAX_CSV_BYTES + 1)
    imported = len(await service.import_csv(portfolio, content, clock.today))
    title = f"{imported} transactions imported"
    await notifier.announce(portfolio, "transactions_imported", title, imported=imported)
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
    clock: ClockDep,
    as_of: Annotated[Day | None, Query(description="value the portfolio at this date")] = None,
) -> PositionsOut:
    """Holdings from FIFO lots: quantity, cost basis, realised and unrealised P&L, and cash."""
    return await service.valuation(portfolio, as_of, clock.today)


async def get_analytics(request: Request, pool: PoolDep) -> PortfolioAnalytics:
    return PortfolioAnalytics(pool, request.app.state.clock)


AnalyticsDep = Annotated[PortfolioAnalytics, Depends(get_analytics)]


@router.get("/{portfolio_id}/performance", response_model=PerformanceOut)
async def performance(portfolio: OwnedPortfolio, analytics: AnalyticsDep) -> PerformanceOut:
    """Daily value, and time- and money-weighted returns for 1D/1W/1M/YTD/1Y/Max against the
    S&P 500 (trading days from the NYSE calendar)."""
    return await analytics.performance(portfolio)


@router.get("/{portfolio_id}/risk", response_model=RiskOut)
async def risk(
    portfolio: OwnedPortfolio,
    analytics: AnalyticsDep,
    lookback_days: Annotated[int, Query(ge=20, le=2520)] = 252,
) -> RiskOut:
    """Volatility, beta, Sharpe, Sortino, max drawdown, VaR/CVaR 95%, correlation of holdings
    and allocation by sector, over the last `lookback_days` trading days."""
    return await analytics.risk(portfolio, lookback_days)


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
    return await analytics.optimize(portfolio, method, lookback_days)
