"""The market clock bounds every answer: during a replay no route names a day after the replay
day, answers say which bar they are `as_of` and whether it is `stale`, and a user's writes take
the replay's date. Back on the real clock the same routes show the newest bar, stale (the
bundled data ends in 2022).

The database is shared by the whole session: every test that starts the clock stops it
(`replaying`), and waits until the app has seen it stopped before the next test runs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from api.cache import JsonCache
from api.db.clock import MarketClockRepository
from api.services.ab import ChallengerWeights
from api.services.auth import Principal
from api.services.chat.tools import SPECS, ChatTools, jsonable
from api.services.market import MarketService
from api.services.market_data import MarketDataService
from api.services.prediction_log import PredictionLog
from api.services.predictions import PredictionService
from tests.conftest import sign_up
from tests.utils import eventually, invoke

PROBE = "KO"  # a bundled ticker with a bar on every session of the replay
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def days_in(value: Any) -> Iterator[date]:
    """Every calendar day written anywhere in a JSON answer (keys, values, inside text)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from days_in(key)
            yield from days_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from days_in(item)
    elif isinstance(value, str):
        yield from (date.fromisoformat(m[0]) for m in _DAY.finditer(value))


def assert_bounded(answer: Any, day: date, where: str) -> None:
    """No day after `day` in `answer`; where it reports its freshness, it is `as_of` that day
    and not stale."""
    later = sorted({d for d in days_in(answer) if d > day})
    assert not later, f"{where} shows {later[:3]} after the replay day {day}"
    if isinstance(answer, dict) and "stale" in answer:
        assert answer["as_of"] == day.isoformat(), (where, answer["as_of"])
        assert answer["stale"] is False, where


async def replay_day(pool: asyncpg.Pool) -> date:
    """A mid-history session: the 200th-last day with bars of both the probe and the S&P 500."""
    day = await pool.fetchval(
        """SELECT date FROM bars WHERE ticker = $1
             AND date IN (SELECT date FROM bars WHERE ticker = 'SPX')
           ORDER BY date DESC OFFSET 199 LIMIT 1""",
        PROBE,
    )
    assert day is not None
    return day


@asynccontextmanager
async def replaying(
    pool: asyncpg.Pool, client: httpx.AsyncClient, day: date
) -> AsyncIterator[None]:
    """The market clock at `day` for the block, once the app behind `client` sees it (its
    readings are kept a moment); the real clock again afterwards, also once the app sees it."""

    async def probe(stale: bool) -> bool:
        quote = (await client.get(f"/api/v1/stocks/{PROBE}/quote")).json()
        return quote.get("stale") is stale and (quote["as_of"] == day.isoformat()) is not stale

    clock = MarketClockRepository(pool)
    await clock.start_run(day)
    try:
        assert await eventually(lambda: probe(stale=False)), "the app never saw the replay"
        yield
    finally:
        await clock.stop()
        assert await eventually(lambda: probe(stale=True)), "the app never left the replay"


@pytest.fixture
async def member(client: httpx.AsyncClient) -> tuple[uuid.UUID, dict[str, str]]:
    """A fresh user (its id and session headers): its portfolios are its own."""
    headers = await sign_up(client, f"clock-{uuid.uuid4().hex[:10]}@example.com")
    me = (await client.get("/api/v1/users/me", headers=headers)).json()
    return uuid.UUID(me["id"]), headers


async def _portfolio_holding(
    client: httpx.AsyncClient, headers: dict[str, str], bought: date
) -> str:
    pid = (await client.post("/api/v1/portfolio", json={"name": "Replay"}, headers=headers)).json()
    url = f"/api/v1/portfolio/{pid['id']}/transactions"
    for body in (
        {"type": "deposit", "amount": "10000", "date": str(bought)},
        {"type": "buy", "ticker": PROBE, "quantity": "20", "price": "55", "date": str(bought)},
    ):
        response = await client.post(url, json=body, headers=headers)
        assert response.status_code == 201, response.text
    return pid["id"]


async def test_every_read_route_stops_at_the_replay_day_and_says_it_is_fresh(
    cli_env: None,
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    redis: Redis,
    member: tuple[uuid.UUID, dict[str, str]],
) -> None:
    day = await replay_day(pool)
    built = await invoke("similarity", "build", "--window", "30", "--ticker", PROBE)
    assert built.exit_code == 0, built.output
    user_id, headers = member
    pid = await _portfolio_holding(client, headers, day - timedelta(days=120))
    after = str(day + timedelta(days=60))
    routes: list[tuple[str, dict[str, Any]]] = [
        (f"/api/v1/stocks/{PROBE}", {}),
        (f"/api/v1/stocks/{PROBE}/quote", {}),
        (f"/api/v1/stocks/{PROBE}/history", {}),
        (f"/api/v1/stocks/{PROBE}/history", {"start": str(day - timedelta(days=30)), "end": after}),
        (f"/api/v1/stocks/{PROBE}/history", {"end": after, "interval": "1wk"}),
        (f"/api/v1/analysis/{PROBE}/indicators", {"names": "rsi_14,sma_50,macd_12_26_9"}),
        (f"/api/v1/analysis/{PROBE}/indicators", {"names": "rsi_14", "end": after}),
        (f"/api/v1/analysis/{PROBE}/patterns", {"end": after}),
        (f"/api/v1/analysis/{PROBE}/summary", {}),
        (f"/api/v1/analysis/{PROBE}/levels", {"end": after}),
        (f"/api/v1/analysis/{PROBE}/similar", {"window": 30, "k": 10}),
        ("/api/v1/market/overview", {}),
        ("/api/v1/market/sectors", {"period": "1m"}),
        ("/api/v1/market/movers", {"period": "1w"}),
        ("/api/v1/market/sectors/correlation", {"lookback_days": 60}),
    ]
    portfolio_routes = [f"/api/v1/portfolio/{pid}/{r}" for r in ("positions", "performance")]
    async with replaying(pool, client, day):
        for path, params in routes:
            response = await client.get(path, params=params)
            assert response.status_code == 200, (path, response.text)
            assert_bounded(response.json(), day, path)
        for path in portfolio_routes:
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
            assert_bounded(response.json(), day, path)
        positions = (await client.get(portfolio_routes[0], headers=headers)).json()
        assert positions["positions"][0]["price_date"] == str(day)
        performance = (await client.get(portfolio_routes[1], headers=headers)).json()
        assert performance["history"][-1]["date"] == str(day)
        scan = await client.get(
            "/api/v1/analysis/patterns/scan", params={"pattern": "engulfing", "date": after}
        )  # the newest OHLC bars predate the replay day: dated then, and stale
        assert scan.status_code == 200 and scan.json()["stale"] is True
        assert not [d for d in days_in(scan.json()) if d > day]

        tools = ChatTools(
            pool,
            Principal(user_id, "user", None),
            MarketDataService(pool),
            MarketService.cached_in(pool, redis),
            PredictionService(  # no model serving here: tests/serving covers forecasts
                pool,
                None,
                JsonCache(redis, "pred:v1", 60),
                PredictionLog(pool),
                ChallengerWeights(pool),
            ),
        )
        arguments = {"portfolio_summary": {}, "sector_performance": {"period": "1m"}}
        for spec in SPECS:
            result = await tools.run(spec.name, arguments.get(spec.name, {"ticker": PROBE}))
            assert result.ok, result.data
            assert_bounded(json.loads(jsonable(result.data)), day, f"tool {spec.name}")

    newest = await pool.fetchval("SELECT max(date) FROM bars WHERE ticker = $1", PROBE)
    quote = (await client.get(f"/api/v1/stocks/{PROBE}/quote")).json()
    assert (quote["as_of"], quote["date"], quote["stale"]) == (str(newest), str(newest), True)


async def test_a_transaction_after_the_replay_day_is_refused_and_one_on_it_accepted(
    client: httpx.AsyncClient, pool: asyncpg.Pool, member: tuple[uuid.UUID, dict[str, str]]
) -> None:
    day = await replay_day(pool)
    _, headers = member
    created = await client.post("/api/v1/portfolio", json={"name": "Today"}, headers=headers)
    url = f"/api/v1/portfolio/{created.json()['id']}/transactions"
    tomorrow = day + timedelta(days=1)
    async with replaying(pool, client, day):
        early = await client.post(
            url, json={"type": "deposit", "amount": "100", "date": str(tomorrow)}, headers=headers
        )
        assert early.status_code == 422, early.text
        assert early.json()["code"] == "validation_error"
        assert str(day) in early.json()["detail"]  # names the market date
        on_time = await client.post(
            url, json={"type": "deposit", "amount": "100", "date": str(day)}, headers=headers
        )
        assert on_time.status_code == 201, on_time.text

        csv = f"date,type,amount\n{day},deposit,5\n{tomorrow},deposit,5\n".encode()
        imported = await client.post(
            f"{url}/import", files={"file": ("t.csv", csv)}, headers=headers
        )
        assert imported.status_code == 422 and imported.json()["code"] == "invalid_csv"
        (error,) = imported.json()["errors"]
        assert error["line"] == 3 and str(day) in error["message"]
    listed = (await client.get(url, headers=headers)).json()
    assert [t["date"] for t in listed["items"]] == [str(day)]  # the import wrote nothing
