"""The alert evaluator: every due alert checked against one new trading day of bars, and its
owner notified when it fires (the kinds and when each fires: `api.services.alerts`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import asyncpg
import pandas as pd
import structlog

from api.db.alerts import AlertCheck, AlertRepository, AlertRow, NotificationRow
from api.db.market import BarRepository
from api.db.portfolios import PortfolioRepository
from api.errors import ProblemError
from api.services.alerts import INDICATOR_LOOKBACK, latest_indicator
from api.services.analytics import PortfolioAnalytics
from api.services.notifications import Notifier
from api.services.performance import daily_returns
from api.services.predictions import PredictionService
from contracts import Family, Horizon

log = structlog.get_logger(__name__)


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
        groups: dict[tuple[uuid.UUID, Family, Horizon], list[AlertRow]] = defaultdict(list)
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
