"""Records the OpenAPI response examples (`api/openapi_examples.json`) from the real API, run
in-process on a scratch copy of the bundled data with the models registered under mlruns/.
Re-record after changing a response:

    uv run python -m pipelines.openapi_examples
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx

from api.openapi_examples import EXAMPLES_FILE

MAX_ITEMS = 3
PLACEHOLDERS = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOi…",
    "refresh_token": "q3Jx0q3nA6m2Zk1wYbQeM8vS4tL9pR7u…",
    "key": "sck_1a2b3c4d_Xw9…",
}


def shorten(value: Any) -> Any:
    """Lists cut to a few items (recursively), secrets replaced: an example, not a dump."""
    if isinstance(value, list):
        return [shorten(v) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {k: PLACEHOLDERS[k] if k in PLACEHOLDERS else shorten(v) for k, v in value.items()}
    return value


async def _record(client: Any, out: dict[str, Any], pool: Any, redis_url: str) -> None:
    from api.db.users import UserRepository

    async def call(method: str, template: str, path: str | None = None, **kwargs: Any) -> Any:
        response = await client.request(method, path or template, **kwargs)
        assert response.is_success, (template, response.status_code, response.text)
        body = (
            response.json()
            if response.content and "json" in response.headers.get("content-type", "")
            else None
        )
        if body is not None:
            out[f"{method} {template}"] = shorten(body)
        return body

    await call("GET", "/healthz")
    await call("GET", "/readyz")
    email, password = "jane@example.com", "correct horse battery staple"
    await call(
        "POST",
        "/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Jane"},
    )
    tokens = await call("POST", "/api/v1/auth/login", json={"email": email, "password": password})
    await call("POST", "/api/v1/auth/token", data={"username": email, "password": password})
    tokens = await call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    client.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    await call("GET", "/api/v1/auth/oauth/providers")
    await call("GET", "/api/v1/users/me")
    await call("PATCH", "/api/v1/users/me", json={"timezone": "Europe/Paris", "currency": "EUR"})
    await call("GET", "/api/v1/users/me/settings")
    await call(
        "PUT",
        "/api/v1/users/me/settings",
        json={"default_model": "ensemble", "risk_tolerance": "medium"},
    )
    await call("GET", "/api/v1/users/me/sessions")
    await call(
        "POST",
        "/api/v1/users/me/api-keys",
        json={"name": "notebook", "scopes": ["read:market", "read:predictions"]},
    )
    await call("GET", "/api/v1/users/me/api-keys")
    await call("POST", "/api/v1/users/me/consents", json={"kind": "analytics", "granted": True})
    await call("GET", "/api/v1/users/me/consents")
    await call(
        "PUT",
        "/api/v1/users/me/secrets/{name}",
        "/api/v1/users/me/secrets/openai_api_key",
        json={"value": "sk-your-own-key"},
    )
    await call("GET", "/api/v1/users/me/secrets")

    await call("GET", "/api/v1/stocks", params={"q": "micro"})
    await call("GET", "/api/v1/stocks/{ticker}", "/api/v1/stocks/MSFT")
    await call("GET", "/api/v1/stocks/{ticker}/quote", "/api/v1/stocks/MSFT/quote")
    await call(
        "GET",
        "/api/v1/stocks/{ticker}/history",
        "/api/v1/stocks/GOOG/history",
        params={"start": "2012-01-01", "end": "2012-12-31", "interval": "1mo"},
    )
    await call("GET", "/api/v1/market/overview")
    await call("GET", "/api/v1/market/movers", params={"period": "1w", "limit": 3})
    await call("GET", "/api/v1/market/sectors", params={"period": "ytd"})
    await call("GET", "/api/v1/market/sectors/correlation", params={"lookback_days": 60})
    await call("GET", "/api/v1/analysis/indicators")
    await call("GET", "/api/v1/analysis/patterns")
    await call(
        "GET",
        "/api/v1/analysis/{ticker}/indicators",
        "/api/v1/analysis/AAPL/indicators",
        params={"names": "rsi_14,sma_50", "start": "2022-12-20"},
    )
    await call(
        "GET",
        "/api/v1/analysis/{ticker}/patterns",
        "/api/v1/analysis/GOOG/patterns",
        params={"start": "2012-11-01", "end": "2012-12-31"},
    )
    await call(
        "GET",
        "/api/v1/analysis/patterns/scan",
        params={"pattern": "engulfing", "date": "2012-12-14"},
    )
    await call("GET", "/api/v1/analysis/{ticker}/summary", "/api/v1/analysis/AAPL/summary")
    await call("GET", "/api/v1/analysis/{ticker}/levels", "/api/v1/analysis/AAPL/levels")
    await call(
        "GET", "/api/v1/analysis/{ticker}/similar", "/api/v1/analysis/AAPL/similar", params={"k": 5}
    )

    await call(
        "GET", "/api/v1/predictions/{ticker}", "/api/v1/predictions/AAPL", params={"horizon": 5}
    )
    await call(
        "POST",
        "/api/v1/predictions/batch",
        json={"tickers": ["AAPL", "KO"], "horizon": 5, "model": "ensemble"},
    )
    await call("GET", "/api/v1/predictions/{ticker}/history", "/api/v1/predictions/AAPL/history")
    await call("GET", "/api/v1/models")
    await call("GET", "/api/v1/models/{family}/ab", "/api/v1/models/garch/ab")

    watchlist = await call(
        "POST", "/api/v1/portfolio/watchlists", json={"name": "Tech", "tickers": ["AAPL", "MSFT"]}
    )
    await call(
        "PUT",
        "/api/v1/portfolio/watchlists/{watchlist_id}",
        f"/api/v1/portfolio/watchlists/{watchlist['id']}",
        json={"name": "Big tech", "tickers": ["AAPL", "MSFT", "GOOG"]},
    )
    await call("GET", "/api/v1/portfolio/watchlists")
    portfolio = await call("POST", "/api/v1/portfolio", json={"name": "Retirement"})
    base = f"/api/v1/portfolio/{portfolio['id']}"
    await call("PATCH", "/api/v1/portfolio/{portfolio_id}", base, json={"name": "Retirement 2050"})
    await call("GET", "/api/v1/portfolio/{portfolio_id}", base)
    await call("GET", "/api/v1/portfolio")
    for body in (
        {"type": "deposit", "amount": "50000", "date": "2021-01-04"},
        {"type": "buy", "ticker": "KO", "quantity": "200", "price": "52.1", "date": "2021-01-05"},
        {
            "type": "buy",
            "ticker": "MSFT",
            "quantity": "40",
            "price": "217.5",
            "fee": "1",
            "date": "2021-01-05",
        },
    ):
        await call(
            "POST",
            "/api/v1/portfolio/{portfolio_id}/transactions",
            f"{base}/transactions",
            json=body,
        )
    csv = "date,type,ticker,quantity,price,amount\n2021-06-01,buy,XOM,100,60.5,\n"
    await call(
        "POST",
        "/api/v1/portfolio/{portfolio_id}/transactions/import",
        f"{base}/transactions/import",
        files={"file": ("t.csv", csv.encode())},
    )
    await call("GET", "/api/v1/portfolio/{portfolio_id}/transactions", f"{base}/transactions")
    await call("GET", "/api/v1/portfolio/{portfolio_id}/positions", f"{base}/positions")
    await call("GET", "/api/v1/portfolio/{portfolio_id}/performance", f"{base}/performance")
    await call("GET", "/api/v1/portfolio/{portfolio_id}/risk", f"{base}/risk")
    await call(
        "GET",
        "/api/v1/portfolio/{portfolio_id}/optimize",
        f"{base}/optimize",
        params={"method": "hrp"},
    )
    await _record_alerts(call, pool, redis_url, portfolio["id"])
    await _record_chat(call)
    await call("GET", "/api/v1/users/me/export")
    await call("POST", "/api/v1/auth/verify-email/request")
    await call("POST", "/api/v1/auth/password-reset/request", json={"email": email})
    new_password = "a brand new long passphrase"  # noqa: S105 - the example account's
    await call(
        "POST",
        "/api/v1/users/me/password",
        json={"current_password": password, "new_password": new_password},
    )
    password = new_password

    users = UserRepository(pool)
    for user in await users.list(10, 0):  # the scratch database's only user
        await users.set_role(user.id, "admin")
    tokens = await call("POST", "/api/v1/auth/login", json={"email": email, "password": password})
    client.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    await call("GET", "/api/v1/users")
    bars = (
        "date,open,high,low,close,volume\n"
        "2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11,2000\n"
    )
    await call(
        "POST",
        "/api/v1/admin/bars/import",
        params={"ticker": "ACME", "name": "Acme Corp"},
        files={"file": ("acme.csv", bars.encode(), "text/csv")},
    )


async def _record_alerts(call: Any, pool: Any, redis_url: str, portfolio_id: str) -> None:
    """Alerts of each kind, a trading day played through the feed so they fire, and the
    notifications they leave."""
    from datetime import date

    from redis.asyncio import Redis

    from api.feed import BarProcessor, stored_day
    from api.services.alert_evaluator import AlertEvaluator
    from api.services.notifications import Notifier

    base = "/api/v1/users/me/alerts"
    price = await call(
        "POST", base, json={"kind": "price", "ticker": "KO", "direction": "above", "level": 60}
    )
    path = f"{base}/{price['id']}"
    await call(
        "PUT",
        f"{base}/{{alert_id}}",
        path,
        json={"kind": "move", "ticker": "KO", "direction": "either", "percent": 0.5},
    )
    await call("PATCH", f"{base}/{{alert_id}}", path, json={"note": "big days in KO"})
    await call("GET", f"{base}/{{alert_id}}", path)
    for body in (
        {
            "kind": "indicator",
            "ticker": "AAPL",
            "indicator": "rsi_14",
            "direction": "below",
            "value": 30,
        },
        {"kind": "drawdown", "portfolio_id": portfolio_id, "percent": 5},
    ):
        await call("POST", base, json=body)
    await call("GET", base)
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        day = date(2022, 12, 28)
        processor = BarProcessor(pool, redis, AlertEvaluator(pool, Notifier(pool, redis), None))
        await processor.process(day, await stored_day(pool, day))
    finally:
        await redis.aclose()
    page = await call("GET", "/api/v1/users/me/notifications")
    await call(
        "POST", "/api/v1/users/me/notifications/read", json={"ids": [page["items"][0]["id"]]}
    )


async def _record_chat(call: Any) -> None:
    """A conversation answered by whichever provider is configured (the local responder when
    none is, as on a machine without keys)."""
    conversation = await call(
        "POST", "/api/v1/chat/conversations", json={"title": "Apple this quarter"}
    )
    path = f"/api/v1/chat/conversations/{conversation['id']}"
    await call(
        "POST",
        "/api/v1/chat/conversations/{conversation_id}/messages",
        f"{path}/messages",
        json={"content": "What is the latest quote for AAPL?"},
    )
    await call("GET", "/api/v1/chat/conversations")
    await call("GET", "/api/v1/chat/conversations/{conversation_id}", path)


def record() -> None:
    from api.app import create_app
    from api.db.pool import create_pool
    from api.services.similarity import build
    from api.settings import Settings
    from pipelines.embedded import resolved_settings
    from pipelines.ingest import ingest_bundled
    from pipelines.models import connect
    from serving.local import LocalPredictor
    from training import registry

    with tempfile.TemporaryDirectory(prefix="examples-") as tmp:
        base = Settings(
            data_dir=Path(tmp),
            database_url=None,
            redis_url=None,
            log_level="WARNING",
            feed_mode="off",  # the recorder plays the one day it needs itself
        )
        with resolved_settings(base) as settings:

            async def run() -> dict[str, Any]:
                await ingest_bundled(settings.database_url or "", show_progress=False)
                conn = await connect(settings.database_url or "")  # no command timeout:
                try:  # building the index is the one long statement
                    await build(conn, 30)
                finally:
                    await conn.close()
                pool = await create_pool(settings)
                predictor = LocalPredictor(registry.configure(settings.mlflow_tracking_uri))
                app = create_app(settings, predictor)
                out: dict[str, Any] = {}
                async with app.router.lifespan_context(app):
                    transport = httpx.ASGITransport(app=app)
                    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                        await _record(c, out, pool, settings.redis_url or "")
                await pool.close()
                return out

            examples = asyncio.run(run())
    EXAMPLES_FILE.write_text(json.dumps(examples, indent=1, sort_keys=True, default=str) + "\n")
    print(f"recorded {len(examples)} examples into {EXAMPLES_FILE}")


if __name__ == "__main__":
    record()
