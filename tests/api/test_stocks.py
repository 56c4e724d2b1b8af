"""/api/v1/stocks: search and history against the ingested real data."""

from __future__ import annotations

import httpx
import pytest


async def test_search_by_name_finds_apple_with_sector(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/stocks", params={"q": "apple"})
    assert response.status_code == 200
    hits = response.json()["results"]
    assert hits[0] == {
        "ticker": "AAPL",
        "name": "Apple Inc.",
        "sector": "Information Technology",
        "asset_type": "equity",
    }


async def test_search_ranks_exact_ticker_first(client: httpx.AsyncClient) -> None:
    hits = (await client.get("/api/v1/stocks", params={"q": "ko"})).json()["results"]
    assert hits[0]["ticker"] == "KO"


@pytest.mark.parametrize("query", ["%", "_", "\\", "' OR 1=1 --"])
async def test_search_treats_wildcards_and_quotes_as_text(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get("/api/v1/stocks", params={"q": query})
    assert response.status_code == 200
    assert response.json()["results"] == []


async def test_search_validates_query(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/stocks", params={"q": ""})).status_code == 422
    assert (await client.get("/api/v1/stocks", params={"q": "a", "limit": 0})).status_code == 422


async def test_history_returns_ohlcv_in_range(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/stocks/GOOG/history", params={"start": "2013-02-20", "end": "2013-02-22"}
    )
    assert response.status_code == 200
    body = response.json()
    assert [b["date"] for b in body["bars"]] == ["2013-02-20", "2013-02-21", "2013-02-22"]
    first = body["bars"][0]
    assert first["close"] == pytest.approx(792.46)
    assert first["high"] >= first["low"] and first["volume"] > 0


async def test_close_only_history_has_null_ohlv(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/stocks/aapl/history")).json()
    assert body["end"] == "2022-12-28" and body["start"] == "2021-12-28"
    assert len(body["bars"]) > 240
    assert all(b["open"] is None and b["volume"] is None for b in body["bars"])


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/stocks/NOPE/history", {}, 404, "ticker_not_found"),
        ("/api/v1/stocks/AAPL/history", {"start": "2022-13-01"}, 422, "validation_error"),
        (
            "/api/v1/stocks/AAPL/history",
            {"start": "2022-06-01", "end": "2022-01-01"},
            422,
            "invalid_range",
        ),
        ("/api/v1/stocks/A%20B/history", {}, 422, "invalid_ticker"),
    ],
)
async def test_history_errors_say_what_to_fix(
    client: httpx.AsyncClient, path: str, params: dict, status: int, code: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["detail"]
