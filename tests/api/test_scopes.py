"""Every operation in the OpenAPI document declares what it needs, and an API key lacking it is
refused: 403 `insufficient_scope` for a scope, 401 `session_required` for what only a signed-in
session may do. The table is the published document itself, so a new route cannot be missed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.security.access import IMPLIES, SCOPES
from api.settings import Settings
from tests.conftest import ANONYMOUS, sign_up

SPEC = create_app(Settings()).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]
PATH_VALUES = {"ticker": "AAPL", "name": "openai_api_key", "provider": "github"}


def _path(template: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = PATH_VALUES.get(parameter["name"], str(uuid.uuid4()))
            template = template.replace("{" + parameter["name"] + "}", value)
    return template


def _without(scope: str) -> list[str]:
    """Every scope but `scope` and those that imply it."""
    return sorted(s for s in SCOPES if s != scope and scope not in IMPLIES.get(s, ()))


def test_every_operation_declares_its_access() -> None:
    undeclared = [f"{m} {p}" for m, p, op in OPERATIONS if "x-access" not in op]
    assert not undeclared
    levels = {op["x-access"].split(":", 1)[0] for _, _, op in OPERATIONS}
    assert levels == {"public", "scope", "session", "admin"}


@pytest.fixture(scope="module")
async def owner(client: httpx.AsyncClient) -> dict[str, str]:
    return await sign_up(client, f"scopes-{uuid.uuid4().hex[:8]}@example.com")


@pytest.fixture(scope="module")
async def keys(client: httpx.AsyncClient, owner: dict[str, str]) -> dict[str, str]:
    """For each scope a key holding every other scope (but those implying it); `*` holds all."""
    made: dict[str, str] = {}
    for scope in [*SCOPES, "*"]:
        held = sorted(SCOPES) if scope == "*" else _without(scope)
        response = await client.post(
            "/api/v1/users/me/api-keys", json={"name": scope, "scopes": held}, headers=owner
        )
        assert response.status_code == 201, response.text
        made[scope] = response.json()["key"]
    return made


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [o for o in OPERATIONS if o[2]["x-access"] != "public"],
    ids=[f"{m} {p}" for m, p, o in OPERATIONS if o["x-access"] != "public"],
)
async def test_a_key_without_what_the_operation_needs_is_refused(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    owner: dict[str, str],
    method: str,
    path: str,
    operation: dict[str, Any],
) -> None:
    level, _, scope = operation["x-access"].partition(":")
    key = keys[scope] if level == "scope" else keys["*"]
    url = _path(path, operation)
    response = await client.request(method, url, headers={**ANONYMOUS, "X-API-Key": key})
    if level == "scope":
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "insufficient_scope"
        assert scope in response.json()["detail"]
    else:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "session_required"
    if level == "admin":  # and a plain user's session is no better
        signed_in = await client.request(method, url, headers=owner)
        assert signed_in.status_code == 403 and signed_in.json()["code"] == "forbidden"


async def test_a_key_with_the_scope_gets_through(
    client: httpx.AsyncClient, owner: dict[str, str]
) -> None:
    made = await client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "reader", "scopes": ["read:market", "read:account"]},
        headers=owner,
    )
    key = {**ANONYMOUS, "X-API-Key": made.json()["key"]}
    assert (await client.get("/api/v1/stocks/AAPL", headers=key)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=key)).status_code == 200
    patch = await client.patch("/api/v1/users/me", json={"display_name": "K"}, headers=key)
    assert patch.status_code == 403  # read:account does not write


async def test_write_portfolio_implies_reading_it_but_not_the_reverse(
    client: httpx.AsyncClient, owner: dict[str, str]
) -> None:
    async def key(*scopes: str) -> dict[str, str]:
        made = await client.post(
            "/api/v1/users/me/api-keys", json={"name": "p", "scopes": list(scopes)}, headers=owner
        )
        return {**ANONYMOUS, "X-API-Key": made.json()["key"]}

    writer, reader = await key("write:portfolio"), await key("read:portfolio")
    created = await client.post("/api/v1/portfolio", json={"name": "scoped"}, headers=writer)
    assert created.status_code == 201
    assert (await client.get("/api/v1/portfolio", headers=writer)).status_code == 200
    assert (await client.get("/api/v1/portfolio", headers=reader)).status_code == 200
    refused = await client.post("/api/v1/portfolio", json={"name": "nope"}, headers=reader)
    assert refused.status_code == 403 and "write:portfolio" in refused.json()["detail"]


async def test_a_forecast_alert_needs_the_predictions_scope_too(
    client: httpx.AsyncClient, owner: dict[str, str]
) -> None:
    made = await client.post(
        "/api/v1/users/me/api-keys", json={"name": "a", "scopes": ["alerts"]}, headers=owner
    )
    key = {**ANONYMOUS, "X-API-Key": made.json()["key"]}
    forecast = {"kind": "prediction", "ticker": "AAPL", "direction": "above", "prob_up": 0.6}
    refused = await client.post("/api/v1/users/me/alerts", json=forecast, headers=key)
    assert refused.status_code == 403 and "read:predictions" in refused.json()["detail"]
    price = {"kind": "price", "ticker": "AAPL", "direction": "above", "level": 500}
    assert (
        await client.post("/api/v1/users/me/alerts", json=price, headers=key)
    ).status_code == 201
