"""Alerts: conditions users set on tickers or portfolios, evaluated on every new trading day of
bars, and the notifications they produce (stored, then pushed live).

Kinds and when they fire:

| kind | condition | fires |
|---|---|---|
| `price` | the close is above/below `level` | when it becomes true (a cross) |
| `move` | the close-to-close change is ≥ `percent` up/down/either | every such day |
| `indicator` | an indicator output (e.g. `rsi_14`) is above/below `value` | when it becomes true |
| `prediction` | P(up) at `horizon` is above/below `prob_up` | when it becomes true |
| `drawdown` | time-weighted wealth is ≥ `percent` below its peak | when it becomes true |

"Becomes true" means: true on this bar, and not true on the last bar evaluated (a new or edited
alert has no last state, so it fires on the first bar its condition holds). Every evaluation
is remembered per day, so a day processed twice never fires twice.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import asyncpg
import pandas as pd
import structlog
from pydantic import ConfigDict, Field, RootModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.db.alerts import (
    AlertCheck,
    AlertRepository,
    AlertRow,
    NotificationRepository,
    NotificationRow,
)
from api.db.market import BarRepository
from api.db.portfolios import PortfolioRepository
from api.db.users import UserRepository
from api.errors import NotFound, ProblemError, Unprocessable
from api.schemas import RequestModel
from api.security.crypto import Keyring, email_context
from api.security.mail import AlertEmail, EmailSender
from api.services.market_data import require_known
from api.services.performance import daily_returns
from api.services.portfolios import PortfolioAnalytics
from api.services.predictions import PredictionService
from api.services.preferences import preferences
from contracts import DEFAULT_FAMILY, Family
from features import indicators

log = structlog.get_logger(__name__)

Ticker = Annotated[str, Field(min_length=1, max_length=15, examples=["AAPL"])]
Note = Annotated[str, Field(default="", max_length=200)]
INDICATOR_LOOKBACK = 400  # bars: warms up every curated indicator (the longest is a 200-day mean)


class _AlertBase(RequestModel):
    note: Note = ""
    active: bool = True


class PriceAlert(_AlertBase):
    kind: Literal["price"]
    ticker: Ticker
    direction: Literal["above", "below"]
    level: float = Field(gt=0, allow_inf_nan=False)


class MoveAlert(_AlertBase):
    kind: Literal["move"]
    ticker: Ticker
    direction: Literal["up", "down", "either"] = "either"
    percent: float = Field(gt=0, le=100, description="close-to-close change, in percent")


class IndicatorAlert(_AlertBase):
    kind: Literal["indicator"]
    ticker: Ticker
    indicator: str = Field(min_length=1, max_length=60, examples=["rsi_14"])
    output: str | None = Field(
        default=None, max_length=60, description="which output of a multi-output indicator"
    )
    direction: Literal["above", "below"]
    value: float = Field(allow_inf_nan=False)


class PredictionAlert(_AlertBase):
    kind: Literal["prediction"]
    ticker: Ticker
    horizon: Literal[1, 5, 20] = 5
    model: Family = DEFAULT_FAMILY
    direction: Literal["above", "below"]
    prob_up: float = Field(gt=0, lt=1, description="probability of a rise over the horizon")


class DrawdownAlert(_AlertBase):
    kind: Literal["drawdown"]
    portfolio_id: uuid.UUID
    percent: float = Field(gt=0, le=100, description="fall from the peak, in percent")


AlertIn = Annotated[
    PriceAlert | MoveAlert | IndicatorAlert | PredictionAlert | DrawdownAlert,
    Field(discriminator="kind"),
]


class AlertBody(RootModel[AlertIn]):
    """One alert: its `kind` decides the other fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"kind": "price", "ticker": "AAPL", "direction": "above", "level": 150},
                {"kind": "move", "ticker": "KO", "direction": "down", "percent": 3},
                {
                    "kind": "indicator",
                    "ticker": "MSFT",
                    "indicator": "rsi_14",
                    "direction": "below",
                    "value": 30,
                },
                {
                    "kind": "prediction",
                    "ticker": "XOM",
                    "horizon": 5,
                    "model": DEFAULT_FAMILY,
                    "direction": "above",
                    "prob_up": 0.6,
                },
            ]
        }
    )


_TOP_LEVEL = {"kind", "ticker", "portfolio_id", "note", "active"}


def condition_of(alert: AlertIn) -> dict[str, Any]:
    """The kind-specific fields, as stored in `alerts.condition`."""
    return alert.model_dump(mode="json", exclude=_TOP_LEVEL)


def public(row: AlertRow) -> dict[str, Any]:
    """An alert as the API shows it: its input fields plus its state."""
    return {
        "id": row.id,
        "kind": row.kind,
        "ticker": row.ticker,
        "portfolio_id": row.portfolio_id,
        **row.condition,
        "note": row.note,
        "active": row.active,
        "last_state": row.last_state,
        "last_checked": row.last_checked,
        "last_fired_at": row.last_fired_at,
        "fired_count": row.fired_count,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def notification_payload(row: NotificationRow) -> dict[str, Any]:
    """The WebSocket message (and REST item) of one stored notification."""
    return {
        "type": "notification",
        "id": str(row.id),
        "kind": row.kind,
        "title": row.title,
        "data": row.data,
        "created_at": row.created_at.isoformat(),
        "read": row.read_at is not None,
    }


class AlertService:
    """CRUD with validation: tickers must exist, indicators must be computable on the ticker's
    bars, portfolios must belong to the caller."""

    def __init__(self, pool: asyncpg.Pool, max_per_user: int) -> None:
        self._pool = pool
        self._repo = AlertRepository(pool)
        self._max = max_per_user

    async def _validated(
        self, user_id: uuid.UUID, alert: AlertIn
    ) -> tuple[str | None, uuid.UUID | None]:
        if isinstance(alert, DrawdownAlert):
            if await PortfolioRepository(self._pool).owned(alert.portfolio_id, user_id) is None:
                raise NotFound("portfolio", "no such portfolio")
            return None, alert.portfolio_id
        ticker = alert.ticker.strip().upper()
        await require_known(self._pool, [ticker])
        if isinstance(alert, IndicatorAlert):
            async with self._pool.acquire() as conn:
                bars = await BarRepository(conn).history(ticker, None, INDICATOR_LOOKBACK)
            try:
                latest_indicator(bars, alert.indicator, alert.output)
            except ValueError as exc:
                raise Unprocessable("invalid_indicator", str(exc)) from exc
        return ticker, None

    async def create(self, user_id: uuid.UUID, alert: AlertIn) -> AlertRow:
        if await self._repo.count(user_id) >= self._max:
            raise ProblemError(
                409, "too_many_alerts", f"at most {self._max} alerts; delete some first"
            )
        ticker, portfolio_id = await self._validated(user_id, alert)
        return await self._repo.create(
            user_id,
            alert.kind,
            ticker,
            portfolio_id,
            condition_of(alert),
            alert.note,
            alert.active,
        )

    async def get(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> AlertRow:
        row = await self._repo.get(user_id, alert_id)
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def list(self, user_id: uuid.UUID) -> list[AlertRow]:
        return await self._repo.of_user(user_id)

    async def replace(self, user_id: uuid.UUID, alert_id: uuid.UUID, alert: AlertIn) -> AlertRow:
        await self.get(user_id, alert_id)  # 404 before validating someone else's alert
        ticker, portfolio_id = await self._validated(user_id, alert)
        row = await self._repo.replace(
            user_id,
            alert_id,
            ticker,
            portfolio_id,
            alert.kind,
            condition_of(alert),
            alert.note,
            alert.active,
        )
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def update(
        self, user_id: uuid.UUID, alert_id: uuid.UUID, note: str | None, active: bool | None
    ) -> AlertRow:
        row = await self._repo.update(user_id, alert_id, note, active)
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def delete(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> None:
        if not await self._repo.delete(user_id, alert_id):
            raise NotFound("alert", "no such alert")


def latest_indicator(bars: pd.DataFrame, name: str, output: str | None) -> tuple[date, float]:
    """(date, value) of an indicator output on the last bar; ValueError with the reason when it
    cannot be computed (unknown name or output, a close-only series, too little history)."""
    try:
        call = indicators.parse(name)
    except indicators.IndicatorError as exc:
        raise ValueError(str(exc)) from exc
    if bars.empty:
        raise ValueError("the ticker has no bars")
    result = indicators.compute(bars, call)
    if result.outputs is None:
        raise ValueError(f"{name}: {result.reason}")
    if output is None:
        if len(result.outputs) > 1:
            raise ValueError(f"{name} has several outputs; choose one of {sorted(result.outputs)}")
        (series,) = result.outputs.values()
    elif output in result.outputs:
        series = result.outputs[output]
    else:
        raise ValueError(f"{name} has no output {output!r}; choose one of {sorted(result.outputs)}")
    value = float(series.iloc[-1])
    if not math.isfinite(value):
        raise ValueError(f"{name} has no value on the last bar yet (too little history)")
    return series.index[-1].date(), value


@dataclass(frozen=True)
class AlertMailer:
    """Alert notices by e-mail, for the users who turned `notifications.email` on."""

    sender: EmailSender
    keyring: Keyring

    async def send(self, pool: asyncpg.Pool, rows: Sequence[NotificationRow]) -> None:
        alerts = [r for r in rows if r.kind == "alert"]
        users = UserRepository(pool)
        for user_id in sorted({r.user_id for r in alerts}):
            user = await users.get(user_id)
            if user is None or not preferences(user.settings).notifications.email:
                continue
            address = self.keyring.decrypt(user.email_ct, email_context(user.id))
            for row in (r for r in alerts if r.user_id == user_id):
                await self.sender.send(AlertEmail(address, row.title, _alert_detail(row.data)))


def _alert_detail(data: dict[str, Any]) -> str:
    detail = f"Seen on the close of {data.get('date')} (value {data.get('value')})."
    return f"{detail}\nYour note: {data['note']}" if data.get("note") else detail


class Notifier:
    """Stores notifications, then publishes each on its user's channel for the WebSockets (and
    e-mails alerts to those who opted in). Storing comes first: a notification is never pushed
    or mailed without being kept."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, mailer: AlertMailer | None = None) -> None:
        self._pool = pool
        self._redis = redis
        self._mailer = mailer

    async def notify(
        self, notes: Sequence[tuple[uuid.UUID, str, str, dict[str, Any], uuid.UUID | None]]
    ) -> list[NotificationRow]:
        rows = await NotificationRepository(self._pool).add_many(notes)
        await self.push([(r.user_id, notification_payload(r)) for r in rows])
        if self._mailer is not None:
            await self._mailer.send(self._pool, rows)
        return rows

    async def push(self, messages: Sequence[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        """Publish live-only messages (e.g. portfolio events); best effort when Redis is down."""
        if not messages:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, message in messages:
                    pipe.publish(channels.user_channel(user_id), json.dumps(message, default=str))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("notify_redis_unavailable", error=type(exc).__name__)


@dataclass(frozen=True)
class DayQuote:
    close: float
    previous_close: float | None


@dataclass(frozen=True)
class Verdict:
    state: bool
    title: str
    value: float | None


def _crossed(direction: str, value: float, threshold: float) -> bool:
    return value > threshold if direction == "above" else value < threshold


class AlertEvaluator:
    """Evaluates the due alerts of one trading day and notifies their owners."""

    def __init__(
        self, pool: asyncpg.Pool, notifier: Notifier, predictions: PredictionService | None
    ) -> None:
        self._pool = pool
        self._notifier = notifier
        self._predictions = predictions

    async def evaluate(self, day: date, quotes: dict[str, DayQuote]) -> list[NotificationRow]:
        repo = AlertRepository(self._pool)
        due = await repo.due(sorted(quotes), day)
        if not due:
            return []
        verdicts: dict[uuid.UUID, Verdict] = {}
        verdicts |= self._prices(due, quotes)
        verdicts |= await self._indicators(due, day)
        verdicts |= await self._forecasts(due, day)
        verdicts |= await self._drawdowns(due, day)
        checks, notes = [], []
        for alert in due:
            verdict = verdicts.get(alert.id)
            if verdict is None:  # could not be evaluated today; state kept for the next bar
                continue
            edge = alert.kind == "move" or alert.last_state is not True
            fired = verdict.state and edge
            checks.append(AlertCheck(alert.id, day, verdict.state, fired))
            if fired:
                data = {
                    "alert_id": str(alert.id),
                    "alert_kind": alert.kind,
                    "ticker": alert.ticker,
                    "portfolio_id": None if alert.portfolio_id is None else str(alert.portfolio_id),
                    "date": day.isoformat(),
                    "value": verdict.value,
                    "condition": alert.condition,
                    "note": alert.note,
                }
                notes.append((alert.user_id, "alert", verdict.title, data, alert.id))
        async with self._pool.acquire() as conn, conn.transaction():
            await AlertRepository(conn).record_checks(checks)
        sent = await self._notifier.notify(notes)
        log.info("alerts_evaluated", day=str(day), due=len(due), fired=len(sent))
        return sent

    @staticmethod
    def _prices(due: list[AlertRow], quotes: dict[str, DayQuote]) -> dict[uuid.UUID, Verdict]:
        found = {}
        for alert in due:
            quote = quotes.get(alert.ticker or "")
            if quote is None:
                continue
            c = alert.condition
            if alert.kind == "price":
                state = _crossed(c["direction"], quote.close, c["level"])
                title = f"{alert.ticker} closed {c['direction']} {c['level']:g} at {quote.close:g}"
                found[alert.id] = Verdict(state, title, quote.close)
            elif alert.kind == "move" and quote.previous_close:
                change = quote.close / quote.previous_close - 1.0
                size = c["percent"] / 100.0
                state = {
                    "up": change >= size,
                    "down": change <= -size,
                    "either": abs(change) >= size,
                }[c["direction"]]
                title = f"{alert.ticker} moved {change:+.2%} to {quote.close:g}"
                found[alert.id] = Verdict(state, title, change)
        return found

    async def _indicators(self, due: list[AlertRow], day: date) -> dict[uuid.UUID, Verdict]:
        wanted = [a for a in due if a.kind == "indicator"]
        bars: dict[str, pd.DataFrame] = {}
        async with self._pool.acquire() as conn:
            for ticker in sorted({a.ticker for a in wanted if a.ticker}):
                bars[ticker] = await BarRepository(conn).history(ticker, day, INDICATOR_LOOKBACK)

        def compute() -> dict[uuid.UUID, Verdict]:
            found = {}
            for alert in wanted:
                c = alert.condition
                try:
                    on, value = latest_indicator(
                        bars[alert.ticker or ""], c["indicator"], c["output"]
                    )
                except ValueError as exc:
                    log.info("alert_indicator_unavailable", alert=str(alert.id), reason=str(exc))
                    continue
                if on != day:
                    continue  # no bar that day for this ticker
                name = c["indicator"] + (f".{c['output']}" if c["output"] else "")
                title = f"{alert.ticker} {name} is {c['direction']} {c['value']:g} ({value:.4g})"
                found[alert.id] = Verdict(_crossed(c["direction"], value, c["value"]), title, value)
            return found

        return await asyncio.to_thread(compute) if wanted else {}

    async def _forecasts(self, due: list[AlertRow], day: date) -> dict[uuid.UUID, Verdict]:
        """One predictor call per (owner, model, horizon): each owner sees the variant the A/B
        split gives them everywhere else."""
        wanted = [a for a in due if a.kind == "prediction"]
        if not wanted or self._predictions is None:
            return {}
        groups: dict[tuple[uuid.UUID, str, int], list[AlertRow]] = defaultdict(list)
        for alert in wanted:
            c = alert.condition
            groups[(alert.user_id, c["model"], c["horizon"])].append(alert)
        found = {}
        for (user_id, model, horizon), alerts in groups.items():
            tickers = sorted({a.ticker for a in alerts if a.ticker})
            try:
                forecasts = await self._predictions.predict_many(
                    tickers, horizon, model, f"user:{user_id}", as_of=day
                )
            except ProblemError as exc:  # no model deployed yet, too little history, ...
                log.info("alert_prediction_unavailable", model=model, reason=exc.detail)
                continue
            by_ticker = {f["ticker"]: f for f in forecasts}
            for alert in alerts:
                forecast = by_ticker.get(alert.ticker or "")
                if forecast is None or forecast["as_of"] != day.isoformat():
                    continue
                c = alert.condition
                p = float(forecast["prob_up"])
                title = (
                    f"{alert.ticker}: P(up over {horizon}d) is {p:.0%}, "
                    f"{c['direction']} {c['prob_up']:.0%} ({model} v{forecast['model']['version']})"
                )
                found[alert.id] = Verdict(_crossed(c["direction"], p, c["prob_up"]), title, p)
        return found

    async def _drawdowns(self, due: list[AlertRow], day: date) -> dict[uuid.UUID, Verdict]:
        found = {}
        analytics = PortfolioAnalytics(self._pool)
        repo = PortfolioRepository(self._pool)
        for alert in (a for a in due if a.kind == "drawdown" and a.portfolio_id):
            portfolio = await repo.owned(alert.portfolio_id, alert.user_id)  # type: ignore[arg-type]
            history = None if portfolio is None else await analytics.history(portfolio)
            if history is None:
                continue
            values = history[1].loc[: pd.Timestamp(day)]
            returns = daily_returns(values)
            if returns.empty:
                continue
            wealth = (1.0 + returns).cumprod()
            drawdown = float(1.0 - wealth.iloc[-1] / max(wealth.max(), 1.0))
            limit = alert.condition["percent"] / 100.0
            title = f"portfolio {portfolio.name!r} is {drawdown:.1%} below its peak"  # type: ignore[union-attr]
            found[alert.id] = Verdict(drawdown >= limit, title, drawdown)
        return found
