"""/api/v1/portfolio: several portfolios per user, their transactions, positions, CSV import
and export, and watchlists.

Ownership is one dependency (`OwnedPortfolio`): a portfolio that is not the caller's answers
404, exactly like one that does not exist. API keys need the `write:portfolio` scope here.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, UploadFile
from pydantic import BaseModel, Field

from api.db.portfolios import (
    PortfolioRepository,
    PortfolioRow,
    TransactionRepository,
    TransactionRow,
)
from api.deps import PoolDep, PrincipalDep, require_scope
from api.errors import ProblemError
from api.services.portfolios import MAX_CSV_BYTES, PortfolioService, TransactionIn

SCOPE = "write:portfolio"
router = APIRouter(
    prefix="/api/v1/portfolio", tags=["portfolio"], dependencies=[require_scope(SCOPE)]
)


class PortfolioIn(BaseModel):
    name: str = Field(min_length=1, max_length=80, examples=["Retirement"])


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
    quantity: Decimal
    price: Decimal
    amount: Decimal
    fee: Decimal
    note: str
    created_at: datetime


class TransactionPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TransactionOut]


class PositionOut(BaseModel):
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
    weight: float | None = Field(description="share of the portfolio's value, cash included")


class PositionsOut(BaseModel):
    portfolio_id: uuid.UUID
    as_of: date | None
    cash: Decimal
    invested: Decimal = Field(description="deposits minus withdrawals")
    market_value: Decimal = Field(description="holdings at their last close, plus cash")
    realised_pnl: Decimal
    unrealised_pnl: Decimal
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


@router.post("", response_model=PortfolioOut, status_code=201)
async def create_portfolio(
    body: PortfolioIn, principal: PrincipalDep, service: ServiceDep
) -> PortfolioOut:
    return _portfolio_out(await service.create(principal.user_id, body.name))


@router.get("", response_model=list[PortfolioOut])
async def list_portfolios(principal: PrincipalDep, pool: PoolDep) -> list[PortfolioOut]:
    return [_portfolio_out(r) for r in await PortfolioRepository(pool).of_user(principal.user_id)]


@router.get("/{portfolio_id}", response_model=PortfolioOut)
async def get_portfolio(portfolio: OwnedPortfolio) -> PortfolioOut:
    return _portfolio_out(portfolio)


@router.patch("/{portfolio_id}", response_model=PortfolioOut)
async def rename_portfolio(
    body: PortfolioIn, portfolio: OwnedPortfolio, service: ServiceDep
) -> PortfolioOut:
    return _portfolio_out(await service.rename(portfolio, body.name))


@router.delete("/{portfolio_id}", status_code=204)
async def delete_portfolio(portfolio: OwnedPortfolio, pool: PoolDep) -> None:
    """Delete the portfolio and its whole ledger."""
    await PortfolioRepository(pool).delete(portfolio.id)


@router.post("/{portfolio_id}/transactions", response_model=TransactionOut, status_code=201)
async def add_transaction(
    body: TransactionIn,
    portfolio: OwnedPortfolio,
    service: ServiceDep,
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
    at its date is refused (422 `oversold`), also when requests race."""
    row, created = await service.add(portfolio, body, idempotency_key)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return _tx_out(row)


@router.get("/{portfolio_id}/transactions", response_model=TransactionPage)
async def list_transactions(
    portfolio: OwnedPortfolio,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TransactionPage:
    """Newest first."""
    rows, total = await TransactionRepository(pool).page(portfolio.id, limit, offset)
    return TransactionPage(
        total=total, limit=limit, offset=offset, items=[_tx_out(r) for r in rows]
    )


@router.delete("/{portfolio_id}/transactions/{transaction_id}", status_code=204)
async def delete_transaction(
    transaction_id: uuid.UUID, portfolio: OwnedPortfolio, service: ServiceDep
) -> None:
    """Remove a mistaken entry (refused if a later sell would then exceed the holding)."""
    await service.remove(portfolio, transaction_id)


@router.post("/{portfolio_id}/transactions/import", response_model=ImportOut, status_code=201)
async def import_transactions(
    file: UploadFile, portfolio: OwnedPortfolio, service: ServiceDep
) -> ImportOut:
    """CSV with `date,type,ticker,quantity,price,amount,fee,note`; all rows or none, every
    error with its line number."""
    content = await file.read(MAX_CSV_BYTES + 1)
    return ImportOut(imported=len(await service.import_csv(portfolio, content)))


@router.get("/{portfolio_id}/transactions/export")
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
    as_of: Annotated[date | None, Query(description="value the portfolio at this date")] = None,
) -> PositionsOut:
    """Holdings from FIFO lots: quantity, cost basis, realised and unrealised P&L, and cash."""
    book, views = await service.positions(portfolio, as_of)
    holdings = sum((v.market_value or Decimal(0) for v in views), Decimal(0))
    total = holdings + book.cash
    return PositionsOut(
        portfolio_id=portfolio.id,
        as_of=as_of,
        cash=book.cash,
        invested=book.deposits - book.withdrawals,
        market_value=total,
        realised_pnl=sum((v.realised_pnl for v in views), Decimal(0)),
        unrealised_pnl=sum((v.unrealised_pnl or Decimal(0) for v in views), Decimal(0)),
        positions=[
            PositionOut(
                **{k: getattr(v, k) for k in PositionOut.model_fields if k != "weight"},
                weight=float(v.market_value / total)
                if v.market_value is not None and total
                else None,
            )
            for v in views
        ],
    )
