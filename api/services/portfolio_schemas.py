"""Portfolio, transaction and position schemas: one model per resource, for requests and
responses alike. The public models validate straight from the repository rows
(`from_attributes`), so no field list is copied by hand between a row and its response.
(Response models carry comments, not docstrings: a docstring would become schema text.)"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas import MAX_DECIMAL, Amount, Day, PlainDecimal, RequestModel
from api.services.ledger import ZERO, Entry
from features.bars import normalise_ticker

TransactionType = Literal["buy", "sell", "dividend", "deposit", "withdraw", "fee"]


class PortfolioIn(RequestModel):
    name: str = Field(min_length=1, max_length=80, examples=["Retirement"])

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Retirement"}]})


class PortfolioOut(BaseModel):  # validated from a `PortfolioRow`
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    base_currency: str
    created_at: datetime
    updated_at: datetime


class TransactionIn(RequestModel):
    """A buy or sell needs ticker, quantity and price (fee optional); a dividend a ticker and
    an amount; a deposit, withdrawal or fee an amount and no ticker. `quantity × price` stands
    in for a missing amount. The date may not be after the market's today (under a replayed
    market, the replay day)."""

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
            (self.quantity or ZERO) if trade else ZERO,  # a trade has both (`_complete`)
            (self.price or ZERO) if trade else ZERO,
            ZERO if trade else (self.amount or ZERO),
            self.fee if trade else ZERO,
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()


def future_date(day: date, today: date) -> str | None:
    """Why a transaction dated `day` is refused when the market's today is `today` (the replay
    day under a simulated clock), or None when it is not in the future."""
    return f"date {day} is after the market date {today}" if day > today else None


class TransactionOut(BaseModel):  # validated from a `TransactionRow`
    model_config = ConfigDict(from_attributes=True)

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


class PositionOut(BaseModel):  # one holding from FIFO lots, valued at its last close
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


class PositionsOut(BaseModel):  # the positions, and the totals over them and cash
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
