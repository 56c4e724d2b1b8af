"""WebSockets through the real app on a real server: authentication, subscriptions, quotes of a
replayed day, alerts and portfolio events pushed live, model events, and a slow consumer that
is dropped without stalling a fast one."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.settings import Settings
from tests.api.test_observability import sample
from tests.conftest import sign_up
from tests.live_server import serving
from tests.utils import eventually, play

DAY = date(2022, 12, 28)


@pytest.fixture(scope="module")
async def server(settings: Settings, first_ingest: object) -> AsyncIterator[Any]:
    """The API on a loopback port, with fast heartbeats and a small slow-client budget."""
    app = create_app(
        settings.model_copy(
            update={"ws_heartbeat_s": 0.5, "ws_auth_timeout_s": 1.0, "ws_queue_limit": 32}
        )
    )
    async with serving(app) as host:
        app.state.host = host
        yield app


@pytest.fixture
async def me(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A fresh user: (access token, headers)."""
    headers = await sign_up(client, f"ws-{uuid.uuid4().hex[:12]}@example.com")
    return headers["Authorization"].removeprefix("Bearer "), headers


def url(server: Any, path: str, token: str | None = None) -> str:
    return f"ws://{server.state.host}{path}" + (f"?token={token}" if token else "")


async def receive(ws: ClientConnection, kind: str, seconds: float = 10.0) -> dict[str, Any]:
    """The next message of type `kind` (heartbeats and others skipped)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind!r} message within {seconds} s")
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
        except TimeoutError:
            raise AssertionError(f"no {kind!r} message within {seconds} s") from None
        if message["type"] == kind:
            return message


async def quote_of(ws: ClientConnection, day: date) -> dict[str, Any]:
    """The quote for `day` (a subscription first gets the last stored quote, maybe older)."""
    for _ in range(10):
        quote = await receive(ws, "quote")
        if quote["date"] == str(day):
            return quote
    raise AssertionError(f"no quote for {day}")


async def close_code(ws: ClientConnection, seconds: float = 10.0) -> int | None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    raise AssertionError("still open")


async def lines_until(
    stream: asyncio.StreamReader, beginnings: set[str], seconds: float
) -> list[str]:
    """Lines read from `stream` until one has begun with each of `beginnings` (bounded)."""
    lines: list[str] = []
    missing = set(beginnings)
    try:
        async with asyncio.timeout(seconds):
            while missing:
                line = (await stream.readline()).decode()
                if not line:
                    break  # the writer ended first
                lines.append(line)
                missing = {b for b in missing if not line.startswith(b)}
    except TimeoutError:
        pass
    assert not missing, f"never printed {sorted(missing)}; printed:\n{''.join(lines)}"
    return lines


async def test_unauthenticated_connections_are_refused(server: Any) -> None:
    async with connect(url(server, "/ws/real-time", "not-a-token")) as ws:
        assert await close_code(ws) == 4401
    async with connect(url(server, "/ws/real-time")) as ws:
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["AAPL"]}))
        assert await close_code(ws) == 4401  # the first message must carry credentials
    async with connect(url(server, "/ws/notifications")) as ws:
        assert await close_code(ws) == 4401  # nothing sent within ws_auth_timeout_s


async def test_api_keys_need_the_stream_scope(
    server: Any, client: httpx.AsyncClient, me: tuple[str, dict[str, str]]
) -> None:
    _, headers = me
    made = await client.post(
        "/api/v1/users/me/api-keys",
        headers=headers,
        json={"name": "bot", "scopes": ["read:predictions"]},
    )
    key = made.json()["key"]
    async with connect(url(server, "/ws/real-time", key)) as ws:
        assert await close_code(ws) == 4403
    async with connect(url(server, "/ws/predictions"), additional_headers={"X-API-Key": key}) as ws:
        assert (await receive(ws, "welcome"))["stream"] == "predictions"
    async with connect(url(server, "/ws/notifications", key)) as ws:
        assert await close_code(ws) == 4403  # notifications have their own scope now
    notes = await client.post(
        "/api/v1/users/me/api-keys",
        headers=headers,
        json={"name": "inbox", "scopes": ["notifications"]},
    )
    async with connect(url(server, "/ws/notifications", notes.json()["key"])) as ws:
        assert (await receive(ws, "welcome"))["stream"] == "notifications"


async def test_credentials_swapped_mid_socket_must_carry_the_scope(
    server: Any, client: httpx.AsyncClient, me: tuple[str, dict[str, str]]
) -> None:
    token, headers = me
    made = await client.post(
        "/api/v1/users/me/api-keys", headers=headers, json={"name": "x", "scopes": ["chat"]}
    )
    async with connect(url(server, "/ws/real-time", token)) as ws:
        await receive(ws, "welcome")
        await ws.send(json.dumps({"action": "auth", "token": made.json()["key"]}))
        assert await close_code(ws) == 4403


async def test_a_hostile_query_string_is_refused_before_the_socket_opens(server: Any) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(server, "/ws/real-time", "abc%00def")):
            pass
    assert refused.value.response.status_code == 403


async def test_a_socket_closes_when_its_session_ends(
    server: Any, client: httpx.AsyncClient, me: tuple[str, dict[str, str]]
) -> None:
    token, headers = me
    async with connect(url(server, "/ws/real-time", token)) as ws:
        await receive(ws, "welcome")
        assert (await client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
        assert await close_code(ws) == 4401  # at the next heartbeat (0.5 s here)


async def test_subscribe_and_receive_the_quotes_of_a_replayed_day(
    server: Any,
    me: tuple[str, dict[str, str]],
    pool: asyncpg.Pool,
    redis: Redis,
    metrics_auth: dict[str, str],
) -> None:
    token, _ = me
    await redis.delete("quote:AAPL")  # no stored quote: the one that arrives is the live one
    async with connect(url(server, "/ws/real-time")) as ws:
        await ws.send(json.dumps({"action": "auth", "token": token}))
        welcome = await receive(ws, "welcome")
        assert welcome["stream"] == "real-time" and welcome["heartbeat_s"] == 0.5
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["aapl", "KO"]}))
        assert (await receive(ws, "subscribed"))["tickers"] == ["AAPL", "KO"]
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["NOPE"]}))
        assert (await receive(ws, "error"))["code"] == "unknown_tickers"
        await ws.send("not json")
        assert (await receive(ws, "error"))["code"] == "invalid_message"
        await ws.send(json.dumps({"action": "unsubscribe", "tickers": ["KO"]}))
        assert (await receive(ws, "unsubscribed"))["tickers"] == ["AAPL"]

        await play(pool, redis, DAY)
        quote = await receive(ws, "quote")
        close = await pool.fetchval(
            "SELECT close FROM bars WHERE ticker = 'AAPL' AND date = $1", DAY
        )
        assert quote["ticker"] == "AAPL" and quote["date"] == str(DAY)
        assert quote["close"] == pytest.approx(close)
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["AAPL"]}))
        assert (await receive(ws, "quote"))["date"] == str(DAY)  # a new subscriber's snapshot
        assert (await receive(ws, "heartbeat"))["ts"] > 0
        await ws.send(json.dumps({"action": "ping"}))
        await receive(ws, "pong")
        async with httpx.AsyncClient(base_url=f"http://{server.state.host}") as http:
            metrics = (await http.get("/metrics", headers=metrics_auth)).text
        open_sockets = sample(metrics, "stockcopilot_websocket_connections", stream="real-time")
        assert open_sockets is not None and open_sockets >= 1


async def test_alerts_portfolio_and_model_events_are_pushed(
    server: Any,
    client: httpx.AsyncClient,
    me: tuple[str, dict[str, str]],
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    token, headers = me
    alert = await client.post(
        "/api/v1/users/me/alerts",
        headers=headers,
        json={"kind": "price", "ticker": "XOM", "direction": "above", "level": 1},
    )
    assert alert.status_code == 201
    settings = (await client.get("/api/v1/users/me/settings", headers=headers)).json()
    settings["notifications"]["model_events"] = True  # model moves are opt-in
    assert (
        await client.put("/api/v1/users/me/settings", headers=headers, json=settings)
    ).status_code == 200
    async with connect(url(server, "/ws/notifications", token)) as ws:
        assert (await receive(ws, "welcome"))["unread"] == 0
        await play(pool, redis, DAY)
        note = await receive(ws, "notification")
        assert note["kind"] == "alert" and note["data"]["alert_id"] == alert.json()["id"]
        stored = await client.get("/api/v1/users/me/notifications", headers=headers)
        assert stored.json()["items"][0]["id"] == note["id"]

        portfolio = (
            await client.post("/api/v1/portfolio", headers=headers, json={"name": "live"})
        ).json()
        await client.post(
            f"/api/v1/portfolio/{portfolio['id']}/transactions",
            headers=headers,
            json={"type": "deposit", "date": "2022-01-03", "amount": 1000},
        )
        event = await receive(ws, "notification")
        assert event["kind"] == "portfolio"
        assert event["data"]["event"] == "transaction_added"
        assert event["data"]["portfolio_id"] == portfolio["id"]

        await redis.publish(
            "notifications:models",
            json.dumps(
                {
                    "type": "model_rollback",
                    "family": "lstm",
                    "alias": "champion",
                    "from_version": "7",
                    "to_version": "6",
                    "reason": "p95 latency above the SLO",
                    "actor": "operator-login",
                }
            ),
        )
        model = await receive(ws, "notification")
        assert model["kind"] == "model" and "rolled back from v7 to v6" in model["title"]
        assert "actor" not in model["data"]  # who moved it stays in the audit trail


async def test_model_events_reach_only_users_who_asked_for_them(
    server: Any, client: httpx.AsyncClient, redis: Redis
) -> None:
    headers = await sign_up(client, f"quiet-{uuid.uuid4().hex[:8]}@example.com")
    token = headers["Authorization"].removeprefix("Bearer ")
    async with connect(url(server, "/ws/notifications", token)) as ws:
        await receive(ws, "welcome")
        event = {"type": "model_promoted", "family": "lstm", "alias": "champion", "to_version": "3"}
        await redis.publish("notifications:models", json.dumps(event))
        with pytest.raises(AssertionError):  # the default: model_events off
            await receive(ws, "notification", seconds=1.5)


async def test_another_users_notifications_are_not_delivered(
    server: Any, client: httpx.AsyncClient, me: tuple[str, dict[str, str]], redis: Redis
) -> None:
    token, _ = me
    other = await sign_up(client, f"other-{uuid.uuid4().hex[:8]}@example.com")
    other_id = (await client.get("/api/v1/users/me", headers=other)).json()["id"]
    async with connect(url(server, "/ws/notifications", token)) as ws:
        await receive(ws, "welcome")
        await redis.publish(
            f"notifications:user:{other_id}",
            json.dumps({"type": "notification", "kind": "alert", "title": "not yours"}),
        )
        with pytest.raises(AssertionError):
            await receive(ws, "notification", seconds=1.5)


async def test_a_slow_consumer_is_dropped_without_stalling_a_fast_one(
    server: Any, client: httpx.AsyncClient, me: tuple[str, dict[str, str]], redis: Redis
) -> None:
    token, headers = me
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    # The slow client: a raw socket with a tiny receive buffer that never reads after the
    # handshake, so the server's writes to it stall once the buffers are full.
    host, port = server.state.host.split(":")
    loop = asyncio.get_running_loop()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.setblocking(False)
    await loop.sock_connect(slow, (host, int(port)))
    await loop.sock_sendall(
        slow,
        (
            f"GET /ws/notifications?token={token} HTTP/1.1\r\nHost: {host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    assert b" 101 " in (await loop.sock_recv(slow, 1024)).split(b"\r\n")[0]
    hub = server.state.hub
    count, padding = 600, "x" * 16_000
    async with connect(url(server, "/ws/notifications", token), max_size=2**20) as fast:
        await receive(fast, "welcome")
        assert await eventually(lambda: hub.connections == 2, 10)
        channel = f"notifications:user:{user_id}"

        async def publish() -> None:
            for i in range(count):
                await redis.publish(
                    channel,
                    json.dumps({"type": "notification", "kind": "test", "seq": i, "pad": padding}),
                )

        async def consume() -> list[int]:
            return [(await receive(fast, "notification"))["seq"] for _ in range(count)]

        _, seen = await asyncio.wait_for(asyncio.gather(publish(), consume()), timeout=60)
        assert seen == list(range(count))  # every message, in order, for the reader
        assert await eventually(lambda: hub.connections == 1, 15)  # the stalled one: 1013
    slow.close()


async def test_the_example_client_follows_all_three_sockets(
    server: Any, pool: asyncpg.Pool, redis: Redis
) -> None:
    script = Path(__file__).parents[2] / "examples" / "live_client.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--url",
        f"http://{server.state.host}",
        "--email",
        f"example-{uuid.uuid4().hex[:8]}@example.com",
        "--seconds",
        "8",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each line as it is printed
    )
    assert process.stdout is not None
    try:
        # the client prints what each socket receives: once all three have answered, the
        # subscriptions and the notification socket are in place for the day to reach them
        ready = await lines_until(
            process.stdout,
            {
                '[quotes] {"type": "subscribed"',
                '[predictions] {"type": "subscribed"',
                '[notifications] {"type": "welcome"',
            },
            seconds=30,
        )
        await play(pool, redis, DAY)
        rest = (await asyncio.wait_for(process.communicate(), timeout=60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = "".join(ready) + rest
    assert process.returncode == 0, output
    assert "alert set:" in output
    assert f"[quotes] {DAY} AAPL" in output
    assert "[predictions]" in output  # this server has no model: an error message, shown
    assert "welcome" in output and '"stream": "notifications"' in output


def test_the_asyncapi_document_matches_the_sockets() -> None:
    import re

    import yaml

    from api.routers import ws

    root = Path(__file__).parents[2]
    spec = yaml.safe_load((root / "docs" / "asyncapi.yaml").read_text())
    sockets = {r.path for r in ws.router.routes}  # type: ignore[attr-defined]
    assert {c["address"] for c in spec["channels"].values()} == sockets
    documented = set(
        spec["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"]
    )
    code = (root / "api" / "routers" / "ws.py").read_text()
    assert set(re.findall(r'_error\(\s*"([a-z_]+)"', code)) <= documented


async def test_sockets_on_two_replicas_both_get_the_feed(
    server: Any,
    settings: Settings,
    me: tuple[str, dict[str, str]],
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    """Each ingress replica's hub listens to Redis: a day processed anywhere reaches all."""
    token, _ = me
    other = create_app(settings)
    async with serving(other) as host:
        other.state.host = host
        async with (
            connect(url(server, "/ws/real-time", token)) as first,
            connect(url(other, "/ws/real-time", token)) as second,
        ):
            for ws in (first, second):
                await ws.send(json.dumps({"action": "subscribe", "tickers": ["PG"]}))
                await receive(ws, "subscribed")
            await play(pool, redis, date(2022, 12, 27))
            quotes = [await quote_of(ws, date(2022, 12, 27)) for ws in (first, second)]
    assert {(q["ticker"], q["date"]) for q in quotes} == {("PG", "2022-12-27")}
