"""Watch Stock Copilot live: one client on all three WebSockets while `make up` runs.

    uv run python examples/live_client.py [--url http://127.0.0.1:8000] [--seconds 60]

It signs up (or logs in) a demo user, sets an alert on 1% days that the replayed market trips,
then subscribes to quotes (`/ws/real-time`), forecasts (`/ws/predictions`) and notifications
(`/ws/notifications`) and prints what arrives until `--seconds` have passed. The message
schemas are in docs/asyncapi.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect


async def sign_in(api: httpx.AsyncClient, email: str, password: str) -> str:
    await api.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Live demo"},
    )  # 409 when the demo user exists already: fine
    response = await api.post("/api/v1/auth/login", json={"email": email, "password": password})
    response.raise_for_status()
    return response.json()["access_token"]


def show(stream: str, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "quote":
        change = message.get("change_pct")
        moved = "" if change is None else f" ({change:+.2%})"
        print(f"[{stream}] {message['date']} {message['ticker']:<5} {message['close']:.2f}{moved}")
    elif kind == "prediction":
        q = message["quantiles"]
        print(
            f"[{stream}] {message['ticker']} as of {message['as_of']}, {message['horizon']}d: "
            f"P(up)={message['prob_up']:.0%}, 80% band {q['p10']:.2f}..{q['p90']:.2f} "
            f"({message['model']['family']} v{message['model']['version']})"
        )
    elif kind == "notification":
        print(f"[{stream}] NOTIFICATION {message.get('kind')}: {message.get('title')}")
    elif kind != "heartbeat":
        print(f"[{stream}] {json.dumps(message)}")


async def listen(ws: ClientConnection, stream: str) -> None:
    async for raw in ws:
        show(stream, json.loads(raw))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--email", default="live-demo@example.com")
    parser.add_argument("--password", default="live demo password 123")
    parser.add_argument("--tickers", default="AAPL,MSFT,KO")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()]

    async with httpx.AsyncClient(base_url=args.url, timeout=30) as api:
        token = await sign_in(api, args.email, args.password)
        headers = {"Authorization": f"Bearer {token}"}
        alert = await api.post(
            "/api/v1/users/me/alerts",
            headers=headers,
            json={
                "kind": "move",
                "ticker": tickers[0],
                "percent": 1.0,
                "note": f"demo: a 1% day in {tickers[0]}",
            },
        )
        alert.raise_for_status()
        alert_id = alert.json()["id"]
        print(f"alert set: {alert_id}")

    base = args.url.replace("http://", "ws://").replace("https://", "wss://")
    async with (
        connect(f"{base}/ws/real-time?token={token}") as quotes,
        connect(f"{base}/ws/predictions?token={token}") as forecasts,
        connect(f"{base}/ws/notifications") as notifications,
    ):
        await notifications.send(json.dumps({"action": "auth", "token": token}))  # the other way
        await quotes.send(json.dumps({"action": "subscribe", "tickers": tickers}))
        await forecasts.send(json.dumps({"action": "subscribe", "tickers": tickers, "horizon": 5}))
        tasks = [
            asyncio.create_task(listen(quotes, "quotes")),
            asyncio.create_task(listen(forecasts, "predictions")),
            asyncio.create_task(listen(notifications, "notifications")),
        ]
        await asyncio.wait(tasks, timeout=args.seconds)
        for task in tasks:
            task.cancel()
    async with httpx.AsyncClient(base_url=args.url, timeout=30, headers=headers) as api:
        await api.delete(f"/api/v1/users/me/alerts/{alert_id}")  # leave no demo alerts behind
    print(f"done after {args.seconds:g} s")


if __name__ == "__main__":
    asyncio.run(main())
