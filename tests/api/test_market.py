"""Stocks (info, quote, resampled history) and market-wide views, checked against direct pandas
computations on the bundled data."""

from __future__ import annotations

import uuid

import httpx
import pandas as pd
import pytest
from redis.asyncio import Redis

from api.settings import Settings
from features.bars import ticker_frame
from tests.conftest import ANONYMOUS, sign_up


@pytest.fixture(scope="module")
async def user(client: httpx.AsyncClient) -> dict[str, str]:
    return await sign_up(client, f"market-{uuid.uuid4().hex[:8]}@example.com")


async def test_stock_info_and_quote(client: httpx.AsyncClient, bundled_bars: pd.DataFrame) -> None:
    info = (await client.get("/api/v1/stocks/msft")).json()
    assert (info["ticker"], info["sector"], info["asset_type"]) == (
        "MSFT",
        "Information Technology",
        "equity",
    )
    msft = ticker_frame(bundled_bars, "MSFT")
    assert info["last_date"] == str(msft.index[-1].date()) and info["bars"] == len(msft)
    quote = (await client.get("/api/v1/stocks/MSFT/quote")).json()
    last, previous = msft["close"].iloc[-1], msft["close"].iloc[-2]
    assert quote["close"] == pytest.approx(last)
    assert quote["change_pct"] == pytest.approx(last / previous - 1)
    year = msft.loc[msft.index[-1] - pd.Timedelta(weeks=52) :]  # close-only this late
    assert quote["high"] is None and quote["volume"] is None
    assert quote["week52_high"] == pytest.approx(year["high"].fillna(year["close"]).max())
    assert quote["week52_low"] == pytest.approx(year["low"].fillna(year["close"]).min())
    assert (await client.get("/api/v1/stocks/NOPE")).status_code == 404


async def test_weekly_and_monthly_history_resample_the_daily_bars(
    client: httpx.AsyncClient, bundled_bars: pd.DataFrame
) -> None:
    params = {"start": "2012-03-01", "end": "2012-05-31"}  # GOOG has full OHLCV then
    weekly = (
        await client.get("/api/v1/stocks/GOOG/history", params={**params, "interval": "1wk"})
    ).json()
    monthly = (
        await client.get("/api/v1/stocks/GOOG/history", params={**params, "interval": "1mo"})
    ).json()
    daily = ticker_frame(bundled_bars, "GOOG").loc["2012-03-01":"2012-05-31"]
    april = daily.loc["2012-04"]
    (apr,) = [b for b in monthly["bars"] if b["date"].startswith("2012-04")]
    assert apr["date"] == str(april.index[-1].date())  # dated by its last trading day
    assert apr["open"] == pytest.approx(april["open"].iloc[0])
    assert apr["high"] == pytest.approx(april["high"].max())
    assert apr["low"] == pytest.approx(april["low"].min())
    assert apr["close"] == pytest.approx(april["close"].iloc[-1])
    assert apr["volume"] == pytest.approx(april["volume"].sum())
    assert len(monthly["bars"]) == 3
    assert all(pd.Timestamp(b["date"]).dayofweek <= 4 for b in weekly["bars"])
    assert sum(1 for _ in weekly["bars"]) == len(daily.groupby(pd.Grouper(freq="W-FRI")))
    bad = await client.get("/api/v1/stocks/MSFT/history", params={"interval": "1h"})
    assert bad.status_code == 422


async def test_market_routes_require_sign_in(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/api/v1/market/overview", headers=ANONYMOUS)
    assert anonymous.status_code == 401
    for path in ("/api/v1/stocks/AAPL/quote", "/api/v1/analysis/AAPL/summary", "/api/v1/models"):
        assert (await client.get(path, headers=ANONYMOUS)).status_code == 401, path


async def test_overview_counts_every_equity_and_matches_the_index(
    client: httpx.AsyncClient, user: dict[str, str], bundled_bars: pd.DataFrame
) -> None:
    overview = (await client.get("/api/v1/market/overview", headers=user)).json()
    spx = ticker_frame(bundled_bars, "SPX")["close"]
    assert overview["index"]["level"] == pytest.approx(spx.iloc[-1])
    assert overview["index"]["change_pct"] == pytest.approx(spx.iloc[-1] / spx.iloc[-2] - 1)
    recent = bundled_bars[
        bundled_bars["ticker"].isin(_equities(bundled_bars))
        & (bundled_bars["date"] >= spx.index[-1] - pd.Timedelta(days=14))
    ]
    counted = overview["advancers"] + overview["decliners"] + overview["unchanged"]
    assert counted == recent["ticker"].nunique() == 20  # GOOG's bundled series ends in 2013


def _equities(bars: pd.DataFrame) -> list[str]:
    from features.datasets import load_universe

    return [i.ticker for i in load_universe().instruments if i.asset_type == "equity"]


def _wide(bars: pd.DataFrame, tickers: list[str]) -> pd.DataFrame:
    subset = bars[bars["ticker"].isin(tickers)]
    return subset.pivot(index="date", columns="ticker", values="close").sort_index()


async def test_sector_aggregates_match_a_direct_pandas_computation(
    client: httpx.AsyncClient, user: dict[str, str], bundled_bars: pd.DataFrame, settings: Settings
) -> None:
    from features.datasets import load_universe

    body = (
        await client.get("/api/v1/market/sectors", params={"period": "1m"}, headers=user)
    ).json()
    recent = bundled_bars[
        bundled_bars["date"] >= bundled_bars["date"].max() - pd.Timedelta(days=400)
    ]
    sectors = {
        i.ticker: i.sector
        for i in load_universe().instruments
        if i.asset_type == "equity" and i.ticker in set(recent["ticker"])
    }
    wide = _wide(recent, [*sectors, "SPX"]).ffill()
    end = wide.index[-1]
    base = wide.index[wide.index <= end - pd.DateOffset(months=1)][-1]
    assert (body["start"], body["end"]) == (str(base.date()), str(end.date()))
    returns = wide.loc[end] / wide.loc[base] - 1
    assert body["benchmark_return"] == pytest.approx(returns["SPX"])
    for row in body["sectors"]:
        members = [t for t, s in sectors.items() if s == row["sector"]]
        expected = returns[members].mean()
        assert row["return"] == pytest.approx(expected), row["sector"]
        assert row["breadth"] == pytest.approx((returns[members] > 0).mean())
        assert row["relative_strength"] == pytest.approx((1 + expected) / (1 + returns["SPX"]) - 1)

    movers = (
        await client.get("/api/v1/market/movers", params={"period": "1w", "limit": 3}, headers=user)
    ).json()
    gains = [m["return"] for m in movers["gainers"]]
    assert gains == sorted(gains, reverse=True) and all(g > 0 for g in gains)
    assert all(m["return"] < 0 for m in movers["losers"])

    corr = (
        await client.get(
            "/api/v1/market/sectors/correlation", params={"lookback_days": 60}, headers=user
        )
    ).json()
    n = len(corr["sectors"])
    assert n == len(set(sectors.values())) and len(corr["matrix"]) == n
    assert all(corr["matrix"][i][i] == pytest.approx(1.0) for i in range(n))

    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    keys = await redis.keys("market:v2:sectors:1m:*")
    await redis.aclose()
    assert keys and keys[0].endswith(str(end.date()))  # cached under the latest bar date
    again = (
        await client.get("/api/v1/market/sectors", params={"period": "1m"}, headers=user)
    ).json()
    assert again == body
