"""POST /api/v1/admin/bars/import: admin-only, all-or-nothing CSV import."""

from __future__ import annotations

import asyncpg
import httpx

from tests.conftest import ANONYMOUS, sign_up

GOOD = (
    b"date,open,high,low,close,volume\n"
    b"2024-01-02,10,11,9,10.5,1000\n"
    b"2024-01-03,10.5,12,10,11,2000\n"
)


def _upload(content: bytes, name: str = "acme.csv") -> dict:
    return {"file": (name, content, "text/csv")}


async def test_import_requires_an_administrator(client: httpx.AsyncClient) -> None:
    url = "/api/v1/admin/bars/import?ticker=ACME"
    assert (await client.post(url, files=_upload(GOOD), headers=ANONYMOUS)).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert (await client.post(url, files=_upload(GOOD), headers=wrong)).status_code == 401
    user = await sign_up(client, "not-an-admin@example.com")
    response = await client.post(url, files=_upload(GOOD), headers=user)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_bad_rows_commit_nothing_and_are_reported_by_line(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    bad = GOOD + b"2024-01-04,1,0.5,1,1,10\n2024-01-04,1,2,1,1,10\n"
    response = await client.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "BADCO"},
        files=_upload(bad),
        headers=admin_headers,
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_csv" and "nothing was imported" in body["detail"]
    assert [e["line"] for e in body["errors"]] == [4, 5]
    assert await pool.fetchval("SELECT count(*) FROM bars WHERE ticker = 'BADCO'") == 0
    assert await pool.fetchval("SELECT count(*) FROM instruments WHERE ticker = 'BADCO'") == 0


async def test_good_import_is_stored_and_reimport_replaces(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    params = {"ticker": "acme", "name": "Acme Corp", "sector": "Industrials"}
    first = await client.post(
        "/api/v1/admin/bars/import", params=params, files=_upload(GOOD), headers=admin_headers
    )
    assert first.status_code == 201
    assert first.json() == {"ticker": "ACME", "rows": 2, "inserted": 2, "updated": 0}
    again = await client.post(
        "/api/v1/admin/bars/import", params=params, files=_upload(GOOD), headers=admin_headers
    )
    assert again.json() == {"ticker": "ACME", "rows": 2, "inserted": 0, "updated": 2}
    history = (await client.get("/api/v1/stocks/ACME/history")).json()
    assert [b["close"] for b in history["bars"]] == [10.5, 11.0]
    hits = (await client.get("/api/v1/stocks", params={"q": "acme"})).json()["results"]
    assert hits[0]["sector"] == "Industrials"
    assert await pool.fetchval("SELECT count(*) FROM bar_imports WHERE ticker = 'ACME'") == 2


async def test_import_refuses_bad_ticker(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "no way"},
        files=_upload(GOOD),
        headers=admin_headers,
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_ticker"
