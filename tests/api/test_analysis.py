"""/api/v1/analysis: indicators and patterns served from the database."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
import talib

from features.bars import ticker_frame


async def test_msft_rsi_returns_numbers_matching_talib(
    client: httpx.AsyncClient, bundled_bars: pd.DataFrame
) -> None:
    response = await client.get(
        "/api/v1/analysis/MSFT/indicators",
        params={"names": "rsi_14,macd_12_26_9", "start": "2022-12-01", "end": "2022-12-28"},
    )
    assert response.status_code == 200
    body = response.json()
    rsi = body["indicators"][0]
    assert rsi["name"] == "rsi_14" and rsi["category"] == "momentum" and rsi["reason"] is None
    values = rsi["outputs"]["value"]
    assert len(values) == len(body["dates"]) and body["dates"][0] == "2022-12-01"
    assert all(v is not None and 0 <= v <= 100 for v in values)  # warmed up on earlier bars
    close = ticker_frame(bundled_bars, "MSFT")["close"]
    expected = pd.Series(talib.RSI(close.to_numpy(), 14), index=close.index).loc["2022-12-01":]
    np.testing.assert_allclose(values, expected.to_numpy(), rtol=1e-6)
    assert set(body["indicators"][1]["outputs"]) == {"macd", "macdh", "macds"}


async def test_indicator_needing_ohlc_on_close_only_series_gives_reason(
    client: httpx.AsyncClient,
) -> None:
    body = (
        await client.get("/api/v1/analysis/AAPL/indicators", params={"names": "atr_14,rsi_14"})
    ).json()
    atr, rsi = body["indicators"]
    assert atr["outputs"] is None and "requires OHLC" in atr["reason"]
    assert rsi["outputs"] is not None


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({"names": "rsix_14"}, "invalid_indicator", "did you mean"),
        ({"names": "rsi_0"}, "invalid_indicator", "whole number"),
        ({"names": ",".join(f"sma_{i}" for i in range(2, 30))}, "too_many", "at most"),
        ({"names": "rsi_14", "end": "not-a-date"}, "validation_error", "end"),
    ],
)
async def test_bad_indicator_requests_are_422_with_a_fix(
    client: httpx.AsyncClient, params: dict, code: str, fragment: str
) -> None:
    response = await client.get("/api/v1/analysis/MSFT/indicators", params=params)
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert fragment in response.json()["detail"]


async def test_unknown_ticker_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/analysis/ZZZZ/indicators", params={"names": "rsi_14"})
    assert response.status_code == 404


async def test_catalogue_lists_curated_indicators(client: httpx.AsyncClient) -> None:
    catalogue = (await client.get("/api/v1/analysis/indicators")).json()
    assert len(catalogue) >= 40
    rsi = next(item for item in catalogue if item["name"] == "rsi")
    assert rsi["example"] == "rsi_14" and rsi["category"] == "momentum"
    assert len((await client.get("/api/v1/analysis/patterns")).json()) >= 61


async def test_patterns_by_date_for_ohlc_series(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/analysis/GOOG/patterns",
        params={"start": "2013-01-01", "end": "2013-03-01", "names": "engulfing,doji"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["reason"] is None and body["patterns"]
    assert {p["pattern"] for p in body["patterns"]} <= {"engulfing", "doji"}
    assert all("2013-01-01" <= p["date"] <= "2013-03-01" for p in body["patterns"])


async def test_patterns_on_close_only_series_explain_why(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/analysis/KO/patterns")).json()
    assert body["patterns"] == [] and "requires OHLC" in body["reason"]
    bad = await client.get("/api/v1/analysis/GOOG/patterns", params={"names": "teacup"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_pattern"
