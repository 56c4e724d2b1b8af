"""Repositories for A/B testing: challenger weights, the prediction log and realised outcomes.

Weights live in Postgres rather than in settings so `stockcopilot ab set` takes effect in running
servers without a restart. Every forecast the API computes is logged with the variant that served
it; once the bars for its horizon have arrived (ingest or replay), `resolve_due` stores the
realised log return and pinball loss, which `ab report` compares between variants. All SQL is
parametrised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from contracts import Forecast

type Db = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class WeightChange:
    """One move of a family's challenger weight; `from_weight` is None for the first setting."""

    family: str
    from_weight: float | None
    to_weight: float
    actor: str
    reason: str
    at: datetime | None = None


@dataclass(frozen=True)
class LoggedPrediction:
    """A served forecast with the model that made it (the prediction_log row, less its id)."""

    ticker: str
    as_of: date
    horizon: int
    family: str
    version: str
    variant: str
    q10: float
    q50: float
    q90: float
    live: bool = False

    @classmethod
    def of(
        cls, forecast: Forecast, family: str, version: str, variant: str, live: bool
    ) -> LoggedPrediction:
        return cls(
            forecast.ticker,
            forecast.as_of,
            forecast.horizon,
            family,
            version,
            variant,
            forecast.q10,
            forecast.q50,
            forecast.q90,
            live,
        )


@dataclass(frozen=True)
class ResolvedLoss:
    """The realised loss of one logged forecast: what `ab_report` compares between variants."""

    as_of: date
    ticker: str
    horizon: int
    variant: str
    version: str
    loss: float


class AbWeightRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, family: str) -> float:
        """The challenger's share of traffic; 0.0 (champion only) until someone sets one."""
        weight = await self._db.fetchval(
            "SELECT challenger_weight FROM ab_weights WHERE family = $1", family
        )
        return 0.0 if weight is None else float(weight)

    async def all(self) -> dict[str, float]:
        rows = await self._db.fetch("SELECT family, challenger_weight FROM ab_weights")
        return {r["family"]: float(r["challenger_weight"]) for r in rows}

    async def set(self, family: str, weight: float, actor: str, reason: str) -> WeightChange:
        """Store the weight and append the audit event in one statement (so both or neither).

        The previous value is read under a row lock, so concurrent setters record a true
        from -> to chain.
        """
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"challenger weight must be between 0 and 1, got {weight}")
        row = await self._db.fetchrow(
            """WITH old AS (
                   SELECT challenger_weight FROM ab_weights WHERE family = $1 FOR UPDATE
               ), stored AS (
                   INSERT INTO ab_weights (family, challenger_weight, actor, reason, updated_at)
                   VALUES ($1, $2, $3, $4, now())
                   ON CONFLICT (family) DO UPDATE SET
                       challenger_weight = EXCLUDED.challenger_weight,
                       actor = EXCLUDED.actor, reason = EXCLUDED.reason,
                       updated_at = EXCLUDED.updated_at
               )
               INSERT INTO ab_weight_events (family, from_weight, to_weight, actor, reason)
               SELECT $1, (SELECT challenger_weight FROM old), $2, $3, $4
               RETURNING from_weight, at""",
            family,
            weight,
            actor,
            reason,
        )
        assert row is not None
        return WeightChange(family, row["from_weight"], weight, actor, reason, row["at"])

    async def history(self, family: str, limit: int = 100) -> list[WeightChange]:
        """Newest first."""
        rows = await self._db.fetch(
            """SELECT family, from_weight, to_weight, actor, reason, at FROM ab_weight_events
               WHERE family = $1 ORDER BY id DESC LIMIT $2""",
            family,
            limit,
        )
        return [WeightChange(**dict(r)) for r in rows]


async def challenger_weight(db: Db, family: str) -> float:
    """The challenger weight serving should apply now (0.0 if never set); one indexed read.

    Serving calls this whenever it refreshes a family's routing, so `ab set` needs no restart.
    """
    return await AbWeightRepository(db).get(family)


# The outcome bar is the horizon-th final bar after as_of for the ticker (trading days, not
# calendar days), as far as the market clock lets anyone see: a replay resolves forecasts as it
# passes their horizon, never from the stored future. Only the clock's current run is scored.
# Predictions made from a bar that has since disappeared are never resolved.
_RESOLVE_DUE = """
WITH due AS (
    SELECT p.id, outcome.date AS outcome_date, ln(outcome.close / base.close) AS y,
           p.q10, p.q50, p.q90
    FROM prediction_log p
    JOIN visible_bars base ON base.ticker = p.ticker AND base.date = p.as_of
    CROSS JOIN LATERAL (
        SELECT n.date, n.close FROM visible_bars n
        WHERE n.ticker = p.ticker AND n.date > p.as_of AND n.final
        ORDER BY n.date OFFSET p.horizon - 1 LIMIT 1
    ) outcome
    WHERE ($1::text IS NULL OR p.family = $1) AND p.clock_run = (SELECT market_run())
      AND NOT EXISTS (SELECT 1 FROM prediction_outcomes o WHERE o.prediction_id = p.id)
)
INSERT INTO prediction_outcomes (prediction_id, outcome_date, realised_log_return, pinball_loss)
SELECT id, outcome_date, y,
       (greatest(0.1 * (y - q10), -0.9 * (y - q10))
        + greatest(0.5 * (y - q50), -0.5 * (y - q50))
        + greatest(0.9 * (y - q90), -0.1 * (y - q90))) / 3
FROM due
ON CONFLICT (prediction_id) DO NOTHING
"""


class PredictionLogRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def record(self, predictions: Sequence[LoggedPrediction]) -> int:
        """Log forecasts under the market clock's run; one already logged (same ticker, as_of,
        horizon, family, version and run) is kept as first served. A forecast from after the
        clock's day (made before a replay looped back) is dropped. Returns the new rows."""
        if not predictions:
            return 0
        columns = list(zip(*(_row(p) for p in predictions), strict=True))
        status = await self._db.execute(
            """INSERT INTO prediction_log
                   (ticker, as_of, horizon, family, version, variant, q10, q50, q90, live,
                    clock_run)
               SELECT *, (SELECT market_run())
               FROM unnest($1::text[], $2::date[], $3::int[], $4::text[], $5::text[],
                           $6::text[], $7::float8[], $8::float8[], $9::float8[],
                           $10::bool[]) AS f(t, d)
               WHERE d <= (SELECT market_today())
               ON CONFLICT (ticker, as_of, horizon, family, version, clock_run) DO NOTHING""",
            *map(list, columns),
        )
        return int(status.split()[-1])

    async def resolve_due(self, family: str | None = None) -> int:
        """Store outcome and loss for every unresolved forecast whose outcome bar now exists.

        Realised y = ln(close at the horizon-th next bar / close at as_of); the loss is the
        pinball loss averaged over q10/q50/q90 (as `training.metrics.row_pinball`). Idempotent:
        resolved rows are skipped, so a second call returns 0. Returns how many were resolved.
        """
        status = await self._db.execute(_RESOLVE_DUE, family)
        return int(status.split()[-1])

    async def resolved_losses(
        self,
        family: str,
        horizon: int | None = None,
        versions: dict[str, str] | None = None,
    ) -> list[ResolvedLoss]:
        """Per-forecast realised losses of a family's live forecasts, oldest first.

        `versions` ({variant: version}) restricts a variant to one model version, so a report
        compares the current pair rather than everything that ever held the alias. Forecasts for
        a past as-of date are left out: their outcome was already known when they were asked for.
        """
        versions = versions or {}
        rows = await self._db.fetch(
            """SELECT p.as_of, p.ticker, p.horizon, p.variant, p.version, o.pinball_loss AS loss
               FROM prediction_log p JOIN prediction_outcomes o ON o.prediction_id = p.id
               WHERE p.family = $1 AND p.live AND p.clock_run = (SELECT market_run())
                 AND ($2::int IS NULL OR p.horizon = $2)
                 AND ($3::text IS NULL OR p.variant <> 'champion' OR p.version = $3)
                 AND ($4::text IS NULL OR p.variant <> 'challenger' OR p.version = $4)
               ORDER BY p.as_of, p.ticker, p.horizon, p.variant""",
            family,
            horizon,
            versions.get("champion"),
            versions.get("challenger"),
        )
        return [ResolvedLoss(**dict(r)) for r in rows]

    async def version_losses(self, family: str, versions: Sequence[str]) -> list[ResolvedLoss]:
        """Realised losses of the live forecasts of these versions, whatever variant served
        them (a shadow-scored previous champion included), oldest first."""
        rows = await self._db.fetch(
            """SELECT p.as_of, p.ticker, p.horizon, p.variant, p.version, o.pinball_loss AS loss
               FROM prediction_log p JOIN prediction_outcomes o ON o.prediction_id = p.id
               WHERE p.family = $1 AND p.live AND p.clock_run = (SELECT market_run())
                 AND p.version = ANY($2::text[])
               ORDER BY p.as_of, p.ticker, p.horizon, p.version""",
            family,
            list(versions),
        )
        return [ResolvedLoss(**dict(r)) for r in rows]

    async def for_ticker(
        self, ticker: str, horizon: int | None, family: str | None, limit: int
    ) -> list[asyncpg.Record]:
        """Past forecasts served for one ticker, newest first, with their outcome once resolved
        (shadow scores of a previous champion were never served, so they are not listed)."""
        return await self._db.fetch(
            """SELECT p.as_of, p.horizon, p.family, p.version, p.variant, p.live,
                      p.q10, p.q50, p.q90, o.outcome_date, o.realised_log_return, o.pinball_loss
               FROM prediction_log p LEFT JOIN prediction_outcomes o ON o.prediction_id = p.id
               WHERE p.ticker = $1 AND p.variant <> 'shadow'
                 AND p.clock_run = (SELECT market_run()) AND p.as_of <= (SELECT market_today())
                 AND ($2::int IS NULL OR p.horizon = $2) AND ($3::text IS NULL OR p.family = $3)
               ORDER BY p.as_of DESC, p.horizon, p.family LIMIT $4""",
            ticker,
            horizon,
            family,
            limit,
        )


def _row(p: LoggedPrediction) -> tuple:
    return (
        p.ticker,
        p.as_of,
        p.horizon,
        p.family,
        p.version,
        p.variant,
        p.q10,
        p.q50,
        p.q90,
        p.live,
    )
