"""Probes, request ids and problem+json basics."""

from __future__ import annotations

import httpx


async def test_healthz_and_readyz_check_real_services(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123-xyz"})
    assert echoed.headers["x-request-id"] == "abc-123-xyz"
    hostile = await client.get("/healthz", headers={"X-Request-ID": 'x";drop table--'})
    assert hostile.headers["x-request-id"] != 'x";drop table--'
    assert len(hostile.headers["x-request-id"]) == 32


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["code"] == "not_found" and body["instance"]
