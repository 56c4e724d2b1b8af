"""Alerts CRUD with validation and ownership, evaluation on each day of bars (edge triggers,
no double firing), and the stored notifications they leave."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.settings import Settings
from tests.conftest import sign_up
from tests.utils import play

DAYS = [date(2022, 12, d) for d in (22, 23, 27, 28)]


@pytest.fixture
async def me(client: httpx.AsyncClient) -> dict[str, str]:
    """A fresh user per test, so alerts of other tests never fire here."""
    return await sign_up(client, f"alerts-{uuid.uuid4().hex[:12]}@example.com")


async def closes(pool: asyncpg.Pool, ticker: str) -> dict[date, float]:
    rows = await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = $1 AND date = ANY($2::date[])", ticker, DAYS
    )
    return {r["date"]: r["close"] for r in rows}


async def notes(client: httpx.AsyncClient, headers: dict[str, str], **params: object) -> dict:
    response = await client.get("/api/v1/users/me/notifications", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_alert_crud_round_trip_and_ownership(
    client: httpx.AsyncClient, me: dict[str, str]
) -> None:
    base = "/api/v1/users/me/alerts"
    made = await client.post(
        base,
        headers=me,
        json={"kind": "price", "ticker": "aapl", "direction": "above", "level": 150, "note": "x"},
    )
    assert made.status_code == 201, made.text
    alert = made.json()
    assert alert["ticker"] == "AAPL" and alert["level"] == 150 and alert["active"] is True
    assert alert["last_state"] is None and alert["fired_count"] == 0

    listed = (await client.get(base, headers=me)).json()
    assert [a["id"] for a in listed] == [alert["id"]]
    paused = await client.patch(f"{base}/{alert['id']}", headers=me, json={"active": False})
    assert paused.json()["active"] is False and paused.json()["note"] == "x"
    replaced = await client.put(
        f"{base}/{alert['id']}",
        headers=me,
        json={"kind": "move", "ticker": "KO", "percent": 2.5},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["kind"] == "move" and replaced.json()["direction"] == "either"
    assert "level" not in replaced.json()

    stranger = await sign_up(client, f"stranger-{uuid.uuid4().hex[:8]}@example.com")
    assert (await client.get(f"{base}/{alert['id']}", headers=stranger)).status_code == 404
    assert (await client.delete(f"{base}/{alert['id']}", headers=stranger)).status_code == 404
    assert (await client.get(base, headers=stranger)).json() == []

    assert (await client.delete(f"{base}/{alert['id']}", headers=me)).status_code == 204
    assert (await client.get(f"{base}/{alert['id']}", headers=me)).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "price", "ticker": "NOPE", "direction": "above", "level": 1}, 422, None),
        ({"kind": "price", "ticker": "AAPL", "direction": "above", "level": -1}, 422, None),
        ({"kind": "move", "ticker": "AAPL", "percent": 0}, 422, None),
        ({"kind": "volcano", "ticker": "AAPL"}, 422, None),
        (
            {"kind": "indicator", "ticker": "AAPL", "indicator": "rsi_x", "direction": "below"},
            422,
            None,
        ),
        (  # AAPL is a close-only series: ATR needs highs and lows, never invented
            {
                "kind": "indicator",
                "ticker": "AAPL",
                "indicator": "atr_14",
                "direction": "above",
                "value": 1,
            },
            422,
            "invalid_indicator",
        ),
        (  # several outputs and none chosen
            {
                "kind": "indicator",
                "ticker": "AAPL",
                "indicator": "macd_12_26_9",
                "direction": "above",
                "value": 0,
            },
            422,
            "invalid_indicator",
        ),
        (
            {"kind": "prediction", "ticker": "AAPL", "direction": "above", "prob_up": 1.5},
            422,
            None,
        ),
        ({"kind": "drawdown", "portfolio_id": str(uuid.uuid4()), "percent": 10}, 404, None),
    ],
)
async def test_invalid_alerts_are_refused_with_a_reason(
    client: httpx.AsyncClient, me: dict[str, str], body: dict, status: int, code: str | None
) -> None:
    response = await client.post("/api/v1/users/me/alerts", headers=me, json=body)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
        assert "requires" in response.json()["detail"] or "outputs" in response.json()["detail"]


async def test_alert_count_is_limited(settings: Settings, first_ingest: object) -> None:
    app = create_app(settings.model_copy(update={"alerts_max_per_user": 2}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            me = await sign_up(client, f"limit-{uuid.uuid4().hex[:8]}@example.com")
            body = {"kind": "move", "ticker": "KO", "percent": 1}
            codes = [
                (await client.post("/api/v1/users/me/alerts", headers=me, json=body)).status_code
                for _ in range(3)
            ]
    assert codes == [201, 201, 409]


async def test_a_price_cross_fires_once_and_is_stored_and_pushed(
    client: httpx.AsyncClient, me: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    aapl = await closes(pool, "AAPL")
    d0, d1 = DAYS[0], DAYS[1]
    assert aapl[d1] != aapl[d0]
    direction = "above" if aapl[d1] > aapl[d0] else "below"
    level = (aapl[d0] + aapl[d1]) / 2  # crossed between d0 and d1
    made = await client.post(
        "/api/v1/users/me/alerts",
        headers=me,
        json={"kind": "price", "ticker": "AAPL", "direction": direction, "level": level},
    )
    alert = made.json()
    user_id = (await client.get("/api/v1/users/me", headers=me)).json()["id"]
    listener = redis.pubsub()
    await listener.subscribe(f"notifications:user:{user_id}")

    await play(pool, redis, d0)  # not crossed yet
    assert (await notes(client, me))["items"] == []
    await play(pool, redis, d1, d1)  # crossed; the same day again fires nothing more
    page = await notes(client, me)
    assert len(page["items"]) == 1 and page["unread"] == 1
    note = page["items"][0]
    assert note["kind"] == "alert" and note["data"]["alert_id"] == alert["id"]
    assert note["data"]["value"] == pytest.approx(aapl[d1]) and note["data"]["date"] == str(d1)
    assert f"AAPL closed {direction}" in note["title"]

    pushed = None
    for _ in range(50):
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            pushed = message
            break
    await listener.aclose()
    assert pushed is not None and note["id"] in pushed["data"]

    state = (await client.get(f"/api/v1/users/me/alerts/{alert['id']}", headers=me)).json()
    assert state["fired_count"] == 1 and state["last_state"] is True
    assert state["last_checked"] == str(d1)


async def test_moves_fire_every_day_levels_only_when_they_become_true(
    client: httpx.AsyncClient, me: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    base = "/api/v1/users/me/alerts"
    move = (
        await client.post(
            base,
            headers=me,
            json={"kind": "move", "ticker": "KO", "direction": "either", "percent": 0.0001},
        )
    ).json()
    rsi = (
        await client.post(
            base,
            headers=me,
            json={
                "kind": "indicator",
                "ticker": "KO",
                "indicator": "rsi_14",
                "direction": "below",
                "value": 100,
            },
        )
    ).json()
    await play(pool, redis, *DAYS[1:])
    fired = {a["id"]: a["fired_count"] for a in (await client.get(base, headers=me)).json()}
    assert fired[move["id"]] == 3  # KO moved every day
    assert fired[rsi["id"]] == 1  # RSI < 100 became true once and stayed true
    titles = [n["title"] for n in (await notes(client, me))["items"]]
    assert any("KO rsi_14 is below 100" in t for t in titles)


async def test_portfolio_drawdown_alert(
    client: httpx.AsyncClient, me: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    portfolio = (await client.post("/api/v1/portfolio", headers=me, json={"name": "tech"})).json()
    buy = {"type": "buy", "date": "2022-01-03", "ticker": "AAPL", "quantity": 10, "price": 180}
    added = await client.post(
        f"/api/v1/portfolio/{portfolio['id']}/transactions", headers=me, json=buy
    )
    assert added.status_code == 201, added.text
    alert = (
        await client.post(
            "/api/v1/users/me/alerts",
            headers=me,
            json={"kind": "drawdown", "portfolio_id": portfolio["id"], "percent": 10},
        )
    ).json()
    await play(pool, redis, DAYS[-1])
    (note,) = (await notes(client, me))["items"]
    assert note["data"]["alert_id"] == alert["id"]
    assert note["data"]["value"] > 0.10  # AAPL ended 2022 far below its January peak
    assert "below its peak" in note["title"]


async def test_notifications_read_and_delete(
    client: httpx.AsyncClient, me: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    for ticker in ("KO", "PEP"):
        await client.post(
            "/api/v1/users/me/alerts",
            headers=me,
            json={"kind": "price", "ticker": ticker, "direction": "above", "level": 0.01},
        )
    await play(pool, redis, DAYS[-1])
    page = await notes(client, me)
    assert page["unread"] == 2
    first, second = page["items"]
    marked = await client.post(
        "/api/v1/users/me/notifications/read", headers=me, json={"ids": [first["id"]]}
    )
    assert marked.json() == {"marked": 1}
    assert [n["id"] for n in (await notes(client, me, unread=True))["items"]] == [second["id"]]
    stranger = await sign_up(client, f"stranger-{uuid.uuid4().hex[:8]}@example.com")
    gone = await client.delete(f"/api/v1/users/me/notifications/{second['id']}", headers=stranger)
    assert gone.status_code == 404
    assert (
        await client.post("/api/v1/users/me/notifications/read", headers=me, json={})
    ).json() == {"marked": 1}
    deleted = await client.delete(f"/api/v1/users/me/notifications/{second['id']}", headers=me)
    assert deleted.status_code == 204
    page = await notes(client, me)
    assert page["unread"] == 0 and [n["id"] for n in page["items"]] == [first["id"]]

    export = (await client.get("/api/v1/users/me/export", headers=me)).json()
    assert len(export["alerts"]) == 2 and len(export["notifications"]) == 1
