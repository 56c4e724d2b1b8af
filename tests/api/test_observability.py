"""Metrics at /metrics, Sentry with personal data scrubbed, pseudonymous user ids in logs."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from api.app import create_app
from api.metrics import SPECS, PrometheusBackend
from api.observability import init_sentry
from api.security.crypto import Keyring
from api.settings import Settings
from tests.conftest import sign_up


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus exposition text."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit(" ", 1)[0])) if labels else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
async def small_limits(settings: Settings, first_ingest: object) -> AsyncIterator[Any]:
    app = create_app(settings.model_copy(update={"rate_limit_default_per_min": 3}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_requests_are_counted_by_route_template_and_status(
    small_limits: httpx.AsyncClient, metrics_auth: dict[str, str]
) -> None:
    client = small_limits
    headers = await sign_up(client, f"metrics-{uuid.uuid4().hex[:8]}@example.com")
    statuses = [
        (await client.get(f"/api/v1/stocks/{t}", headers=headers)).status_code
        for t in ("AAPL", "KO", "XOM", "JPM")
    ]
    assert statuses == [200, 200, 200, 429]
    await client.get("/no/such/path")
    text = (await client.get("/metrics", headers=metrics_auth)).text
    route = "/api/v1/stocks/{ticker}"
    assert sample(text, "stockcopilot_http_requests_total", route=route, status="200") == 3
    assert sample(text, "stockcopilot_http_requests_total", route=route, status="429") == 1
    assert sample(text, "stockcopilot_http_requests_total", route="unmatched", status="404") == 1
    assert "AAPL" not in text  # raw paths never become labels
    assert sample(text, "stockcopilot_rate_limit_rejections_total", tier="default") == 1
    count = sample(text, "stockcopilot_http_request_duration_seconds_count", route=route)
    assert count == 4
    assert (sample(text, "stockcopilot_users") or 0) >= 1


async def test_every_defined_metric_is_exported_under_its_one_name(
    small_limits: httpx.AsyncClient, metrics_auth: dict[str, str]
) -> None:
    text = (await small_limits.get("/metrics", headers=metrics_auth)).text
    for spec in SPECS:
        name = spec.exposed()[0] if spec.kind == "counter" else spec.name  # `_total` for counters
        assert f"# HELP {name} {spec.help}\n# TYPE {name} {spec.kind}\n" in text


async def test_a_metrics_backend_takes_the_per_replica_metrics_off_the_scrape(
    settings: Settings, first_ingest: object, metrics_auth: dict[str, str]
) -> None:
    """Under Serve the per-replica counts go to Ray's export (serving.metrics); /metrics keeps
    only the gauges read at scrape time, which every replica reports alike."""
    elsewhere = CollectorRegistry()
    app = create_app(settings, metrics_backend=PrometheusBackend(elsewhere))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/no/such/path")).status_code == 404
            scraped = (await client.get("/metrics", headers=metrics_auth)).text
    counted = generate_latest(elsewhere).decode()
    assert sample(counted, "stockcopilot_http_requests_total", route="unmatched") == 1
    assert "stockcopilot_http_requests" not in scraped
    assert sample(scraped, "stockcopilot_users") is not None
    shared = {spec.name for spec in SPECS if spec.shared}
    assert shared and all(f"# TYPE {name} gauge" in scraped for name in shared)
    assert not any(f"# TYPE {name} " in counted for name in shared)


class Captured(Transport):
    """The SDK's own extension point: envelopes kept in memory instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


async def test_sentry_gets_errors_without_personal_data(
    settings: Settings, first_ingest: object
) -> None:
    transport = Captured()
    with_dsn = settings.model_copy(update={"sentry_dsn": SecretStr("http://public@127.0.0.1:9/1")})
    app = create_app(with_dsn)
    sentry_sdk.get_client().close()  # create_app started it with the real transport
    init_sentry(with_dsn, transport=transport)

    async def boom() -> None:
        raise RuntimeError("lookup failed for jane.doe@example.com with eyJhbGciOi.eyJzdWIi.sig")

    app.add_api_route("/boom", boom)
    try:
        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://test",
            )
            response = await client.get(
                "/boom",
                headers={"Authorization": "Bearer secret-token-value", "Cookie": "s=1"},
            )
            await client.aclose()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # back to no client for the rest of the session
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    events = [i.payload.json for e in transport.envelopes for i in e.items if i.type == "event"]
    assert events, "the error reached Sentry"
    raw = repr(events)
    assert "RuntimeError" in raw
    assert "jane.doe@example.com" not in raw and "j***@example.com" in raw
    assert "eyJhbGciOi.eyJzdWIi" not in raw and "secret-token-value" not in raw
    assert "'cookies'" not in raw and "'user'" not in raw
    assert {e["release"] for e in events} == {f"stock-copilot@{settings.app_version}"}


def test_log_pseudonyms_are_stable_and_keyed(settings: Settings) -> None:
    keyring = Keyring.from_settings(settings)
    user = uuid.uuid4()
    name = keyring.pseudonym(user)
    assert name == keyring.pseudonym(user) and name != keyring.pseudonym(uuid.uuid4())
    assert str(user) not in name and user.hex[:8] not in name
    other = Keyring(keyring.keys, keyring.active, b"x" * 32)
    assert other.pseudonym(user) != name  # without the key, no way back to the account
