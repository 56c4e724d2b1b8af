"""What the API tells strangers: /metrics only to Prometheus' token, the docs only when enabled,
one request id per response, no internals in errors."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from api.middleware import RequestContextMiddleware
from api.settings import Settings
from tests.conftest import ANONYMOUS


async def test_metrics_answer_only_the_holder_of_the_metrics_token(
    client: httpx.AsyncClient, metrics_auth: dict[str, str], user_headers: dict[str, str]
) -> None:
    for headers in (ANONYMOUS, user_headers, {"Authorization": "Bearer not-the-token"}):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 404, headers  # as if there were nothing there
        assert "stockcopilot_users" not in refused.text
    scraped = await client.get("/metrics", headers=metrics_auth)
    assert scraped.status_code == 200 and "stockcopilot_users" in scraped.text


async def test_production_without_a_metrics_token_serves_no_metrics(
    settings: Settings, first_ingest: object
) -> None:
    app = create_app(settings.model_copy(update={"metrics_token": None}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/metrics")).status_code == 404


@pytest.mark.parametrize("enabled", [True, False])
async def test_docs_are_served_only_when_enabled(
    settings: Settings, first_ingest: object, enabled: bool
) -> None:
    app = create_app(settings.model_copy(update={"docs_enabled": enabled}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                status = (await client.get(path)).status_code
                assert status == (200 if enabled else 404), path


async def test_every_response_carries_one_request_id(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get("/api/v1/stocks/AAPL"),
        await client.get("/no/such/route"),
        await client.get("/healthz", headers={"x-request-id": "caller-chosen-id-1"}),
    ):
        assert len(response.headers.get_list("x-request-id")) == 1
    echoed = await client.get("/healthz", headers={"x-request-id": "caller-chosen-id-1"})
    assert echoed.headers["x-request-id"] == "caller-chosen-id-1"


async def test_behind_serves_proxy_the_app_leaves_the_echo_to_it() -> None:
    sent: list[dict] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]

    async def capture(message: dict) -> None:
        sent.append(message)

    quiet = RequestContextMiddleware(app, echo=False)  # type: ignore[arg-type]
    await quiet({"type": "http", "path": "/", "headers": []}, None, capture)  # type: ignore[arg-type]
    assert sent[0]["headers"] == []
