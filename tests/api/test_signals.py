"""Signal summary, support/resistance from pivots, and the cross-universe pattern scan."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
import talib

from features import patterns
from features.bars import ticker_frame
from features.signals import support_resistance


async def test_summary_gives_each_verdict_with_the_values_behind_it(
    client: httpx.AsyncClient, goog: pd.DataFrame
) -> None:
    response = await client.get("/api/v1/analysis/GOOG/summary", params={"end": "2012-06-29"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["as_of"] == "2012-06-29"
    closes = goog.loc[:"2012-06-29", "close"].to_numpy(np.float64)
    rsi = talib.RSI(closes, 14)[-1]
    assert body["momentum"]["values"]["rsi_14"] == pytest.approx(rsi)
    sma200 = closes[-200:].mean()
    assert body["trend"]["values"]["sma_200"] == pytest.approx(sma200)
    expected = (
        "bullish"
        if closes[-1] > closes[-50:].mean() > sma200
        else "bearish"
        if closes[-1] < closes[-50:].mean() < sma200
        else "neutral"
    )
    assert body["trend"]["signal"] == expected
    assert body["volatility"]["signal"] in {"high", "normal", "low"}
    assert "atr_14_pct" in body["volatility"]["values"]  # GOOG has full OHLC
    assert body["volume"]["signal"] in {"confirming", "diverging"}
    assert "not forecasts" in body["note"]

    close_only = (await client.get("/api/v1/analysis/SPX/summary")).json()
    assert close_only["volume"]["signal"] == "unavailable"
    assert "realised_vol_20" in close_only["volatility"]["values"]


def test_levels_find_a_planted_range_floor_and_ceiling() -> None:
    days = pd.bdate_range("2023-01-02", periods=240)
    wave = 110 + 10 * np.sin(np.linspace(0, 8 * np.pi, len(days)))  # four trips 100 ↔ 120
    frame = pd.DataFrame({"close": wave}, index=days)
    frame.loc[frame.index[-1], "close"] = 111.0
    found = support_resistance(frame, lookback=240, span=5)
    (floor, *_), (ceiling, *_) = found["support"], found["resistance"]
    assert floor["price"] == pytest.approx(100, abs=0.5) and floor["touches"] >= 3
    assert ceiling["price"] == pytest.approx(120, abs=0.5) and ceiling["touches"] >= 3
    assert floor["distance_pct"] < 0 < ceiling["distance_pct"]


async def test_levels_through_the_api(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/analysis/GOOG/levels", params={"end": "2012-12-31"})).json()
    assert all(level["price"] < body["last_close"] for level in body["support"])
    assert all(level["price"] >= body["last_close"] for level in body["resistance"])
    prices = [level["price"] for level in body["support"]]
    assert prices == sorted(prices, reverse=True)  # nearest first


async def test_pattern_scan_finds_a_ticker_showing_the_pattern_that_day(
    client: httpx.AsyncClient, bundled_bars: pd.DataFrame
) -> None:
    goog = ticker_frame(bundled_bars, "GOOG").loc["2012-06":"2012-12"]
    hits, _ = patterns.detect(goog, ["engulfing"])
    day = hits[-1].date.date()
    response = await client.get(
        "/api/v1/analysis/patterns/scan", params={"pattern": "CDLENGULFING", "date": str(day)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pattern"] == "engulfing" and body["date"] == str(day)
    assert body["scanned"] >= 2  # GOOG and MSFT both have OHLC in 2012
    assert ("GOOG", hits[-1].direction) in {(h["ticker"], h["direction"]) for h in body["hits"]}
    bad = await client.get("/api/v1/analysis/patterns/scan", params={"pattern": "unicorn"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_pattern"
