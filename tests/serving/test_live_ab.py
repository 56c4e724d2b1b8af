"""The whole live loop under the simulated market clock, as the default `make up` runs it: the
app's own feed replays stored days fast, forecasts every instrument after each session by the
champion and the challenger, scores them as the replay passes their horizons, and the A/B route
shows resolved live outcomes for both variants, compared pair by pair, with no client asking
for a forecast."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import httpx
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis

from api.app import create_app
from api.db.ab import AbWeightRepository
from api.db.clock import MarketClockRepository
from api.feed import FeedLeader
from api.settings import Settings
from serving.local import LocalPredictor
from tests.utils import eventually

REPLAY_START = date(2022, 11, 1)
SECONDS_PER_DAY = 0.2


@pytest.fixture
async def replaying(
    settings: Settings,
    serving_registry: MlflowClient,
    pool: asyncpg.Pool,
    redis: Redis,
    user_headers: dict[str, str],
) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose lifespan runs the replay feed at 0.2 s per simulated day, forecasting with
    the hybrid family (its challenger at 50 %)."""
    await redis.delete(FeedLeader.CURSOR_KEY, FeedLeader.LEASE_KEY)
    async with pool.acquire() as conn:
        await AbWeightRepository(conn).set("hybrid", 0.5, "tests", "live A/B replay")
    fast = settings.model_copy(
        update={
            "feed_mode": "replay",
            "feed_replay_start": REPLAY_START,
            "feed_interval_s": SECONDS_PER_DAY,
            "feed_loop": False,
            "feed_lease_s": 3.0,
            "feed_forecast_family": "hybrid",
        }
    )
    app = create_app(fast, LocalPredictor(serving_registry))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://test",
                headers=user_headers,
            ) as client,
        ):
            yield client
    finally:
        await MarketClockRepository(pool).stop()
        await redis.delete(FeedLeader.CURSOR_KEY, FeedLeader.LEASE_KEY)


async def test_a_fast_replay_shows_resolved_live_outcomes_for_both_variants(
    replaying: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    seen: dict[str, object] = {}

    async def both_variants_scored() -> bool:
        response = await replaying.get("/api/v1/models/hybrid/ab", params={"horizon": 1})
        assert response.status_code == 200, response.text
        seen.update(response.json())
        (report,) = seen["horizons"]  # type: ignore[misc]
        return report["method"] == "paired" and report["challenger"]["n"] > 0

    # a 1-day horizon resolves one simulated day after it is made, and the paired comparison
    # needs ten dates: a few seconds into the replay
    assert await eventually(both_variants_scored, 60), seen
    clock = await MarketClockRepository(pool).read()
    assert clock is not None and REPLAY_START < clock.day <= date(2022, 12, 28)
    (report,) = seen["horizons"]  # type: ignore[misc]
    assert report["champion"]["versions"] and report["challenger"]["versions"]
    # both variants forecast every ticker every day: compared pair by pair
    assert report["n_compared"] >= 10 and report["champion"]["n"] > 0
    assert report["champion"]["mean_pinball_loss"] > 0
    assert report["challenger"]["mean_pinball_loss"] > 0
    # every scored forecast is live, of this run, made on or before the replay day, and its
    # outcome is a bar the clock had reached
    rows = await pool.fetch(
        """SELECT p.as_of, o.outcome_date, p.live, p.clock_run, p.variant
           FROM prediction_log p JOIN prediction_outcomes o ON o.prediction_id = p.id
           WHERE p.family = 'hybrid' AND p.clock_run = market_run()"""
    )
    later = await MarketClockRepository(pool).read()
    assert later is not None and rows and all(r["live"] for r in rows)
    assert {r["variant"] for r in rows} == {"champion", "challenger"}
    assert all(r["as_of"] < r["outcome_date"] <= later.day for r in rows)
    # every forecast the feed made has its pair: the same ticker, day and horizon, other variant
    unpaired = await pool.fetchval(
        """SELECT count(*) FROM (
               SELECT ticker, as_of, horizon FROM prediction_log
               WHERE family = 'hybrid' AND clock_run = market_run() AND variant <> 'shadow'
               GROUP BY ticker, as_of, horizon HAVING count(DISTINCT variant) <> 2) lonely"""
    )
    assert unpaired == 0
