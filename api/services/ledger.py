"""Portfolio bookkeeping as pure functions: FIFO lots, positions, realised P&L and cash.

Amounts are `Decimal` end to end (Postgres `numeric` in, JSON strings out), so a position that
was bought and sold in full is exactly zero, never 1e-16. Transactions apply in (date, sequence)
order; a sell consumes the oldest lots first and may never exceed what is held at that point
in time — `replay` raises `Oversold` naming the transaction that would. Writes also replay with
`check_cash`: a withdrawal may not take out more cash than the ledger holds at its date
(`InsufficientCash`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

ZERO = Decimal(0)
TRADE_TYPES = ("buy", "sell")
TICKER_TYPES = ("buy", "sell", "dividend")
CASH_TYPES = ("deposit", "withdraw", "fee")
TYPES = (*TICKER_TYPES, *CASH_TYPES)


@dataclass(frozen=True)
class Entry:
    """One transaction as the ledger sees it. `amount` is the cash value for dividends,
    deposits, withdrawals and fees; trades use quantity × price, plus `fee`."""

    type: str
    date: date
    ticker: str | None = None
    quantity: Decimal = ZERO
    price: Decimal = ZERO
    amount: Decimal = ZERO
    fee: Decimal = ZERO
    sequence: int = 0  # tie-break within a day: the order they were recorded


@dataclass
class Lot:
    quantity: Decimal
    unit_cost: Decimal  # price plus the buy fee spread over the shares
    opened: date


@dataclass
class Position:
    ticker: str
    lots: deque[Lot] = field(default_factory=deque)
    realised: Decimal = ZERO
    dividends: Decimal = ZERO

    @property
    def quantity(self) -> Decimal:
        return sum((lot.quantity for lot in self.lots), ZERO)

    @property
    def cost_basis(self) -> Decimal:
        return sum((lot.quantity * lot.unit_cost for lot in self.lots), ZERO)


@dataclass
class Book:
    positions: dict[str, Position] = field(default_factory=dict)
    cash: Decimal = ZERO
    deposits: Decimal = ZERO
    withdrawals: Decimal = ZERO
    fees: Decimal = ZERO

    def position(self, ticker: str) -> Position:
        return self.positions.setdefault(ticker, Position(ticker))


class Oversold(ValueError):
    def __init__(self, entry: Entry, held: Decimal) -> None:
        super().__init__(
            f"cannot sell {entry.quantity:f} {entry.ticker} on {entry.date}: "
            f"{held:f} held at that date"
        )
        self.entry = entry
        self.held = held


class InsufficientCash(ValueError):
    def __init__(self, entry: Entry, cash: Decimal) -> None:
        super().__init__(
            f"cannot withdraw {entry.amount:f} on {entry.date}: the cash balance is {cash:f}"
        )
        self.entry = entry
        self.cash = cash


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.date, e.sequence))


def replay(
    entries: Iterable[Entry], until: date | None = None, *, check_cash: bool = False
) -> Book:
    """Apply the transactions (up to `until`, inclusive) in order; FIFO for sells."""
    book = Book()
    for entry in ordered(entries):
        if until is not None and entry.date > until:
            break
        if check_cash and entry.type == "withdraw" and entry.amount > book.cash:
            raise InsufficientCash(entry, book.cash)
        apply(book, entry)
    return book


def apply(book: Book, entry: Entry) -> None:
    if entry.type == "buy":
        assert entry.ticker is not None
        gross = entry.quantity * entry.price
        book.position(entry.ticker).lots.append(
            Lot(entry.quantity, (gross + entry.fee) / entry.quantity, entry.date)
        )
        book.cash -= gross + entry.fee
        book.fees += entry.fee
    elif entry.type == "sell":
        assert entry.ticker is not None
        position = book.position(entry.ticker)
        held = position.quantity
        if entry.quantity > held:
            raise Oversold(entry, held)
        remaining, cost = entry.quantity, ZERO
        while remaining > 0:
            lot = position.lots[0]
            taken = min(lot.quantity, remaining)
            cost += taken * lot.unit_cost
            lot.quantity -= taken
            remaining -= taken
            if lot.quantity == 0:
                position.lots.popleft()
        proceeds = entry.quantity * entry.price - entry.fee
        position.realised += proceeds - cost
        book.cash += proceeds
        book.fees += entry.fee
    elif entry.type == "dividend":
        assert entry.ticker is not None
        book.position(entry.ticker).dividends += entry.amount
        book.cash += entry.amount
    elif entry.type == "deposit":
        book.cash += entry.amount
        book.deposits += entry.amount
    elif entry.type == "withdraw":
        book.cash -= entry.amount
        book.withdrawals += entry.amount
    elif entry.type == "fee":
        book.cash -= entry.amount
        book.fees += entry.amount
    else:
        raise ValueError(f"unknown transaction type {entry.type!r}")


def external_flow(entry: Entry) -> Decimal:
    """Money the owner put in (+) or took out (-): what time-weighting must neutralise."""
    if entry.type == "deposit":
        return entry.amount
    if entry.type == "withdraw":
        return -entry.amount
    return ZERO
