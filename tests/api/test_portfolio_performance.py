"""Portfolio returns by hand (TWR with cash flows, XIRR), and performance, risk and optimisation
through the API on the bundled prices."""

from __future__ import annotations

import math
import uuid
from datetime import date
from decimal import Decimal as D

import httpx
import numpy as np
import pandas as pd
import pytest

from api.services.ledger import Entry
from api.services.performance import daily_returns, period_return, twr, value_history, xirr
from tests.conftest import sign_up


def _history() -> pd.DataFrame:
    days = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"])
    closes = pd.DataFrame({"X": [100.0, 110.0, 99.0]}, index=days)
    entries = [
        Entry("deposit", date(2024, 1, 2), amount=D("1000"), sequence=1),
        Entry("buy", date(2024, 1, 2), "X", D("10"), D("100"), sequence=2),
        Entry("deposit", date(2024, 1, 4), amount=D("1100"), sequence=3),
    ]
    return value_history(entries, closes, days)


def test_time_weighted_return_neutralises_a_deposit() -> None:
    history = _history()
    assert history["value"].tolist() == [1000.0, 1100.0, 2090.0]
    assert history["flow"].tolist() == [1000.0, 0.0, 1100.0]
    returns = daily_returns(history)
    # +10% on day 2; day 3: (2090 − 1100) / 1100 − 1 = −10%, the deposit is not performance
    assert returns.round(12).tolist() == [0.1, -0.1]
    assert twr(returns) == pytest.approx(1.1 * 0.9 - 1)


def test_xirr_matches_a_hand_computed_rate() -> None:
    # 1000 in, 1100 out exactly 366 days later (2020 is a leap year)
    rate = xirr([(date(2020, 1, 1), -1000.0), (date(2021, 1, 1), 1100.0)])
    assert rate == pytest.approx(1.1 ** (365 / 366) - 1, rel=1e-9)
    flows = [(date(2020, 1, 1), -1000.0), (date(2020, 7, 1), -500.0), (date(2021, 1, 1), 1700.0)]
    rate = xirr(flows)
    assert rate is not None
    npv = sum(a / (1 + rate) ** ((d - flows[0][0]).days / 365) for d, a in flows)
    assert abs(npv) < 1e-6
    assert xirr([(date(2020, 1, 1), -1000.0)]) is None  # no money back: undefined


def test_period_return_from_inception_and_against_a_benchmark() -> None:
    history = _history()
    benchmark = pd.Series([4000.0, 4040.0, 4080.0], index=history.index)
    result = period_return("Max", history, benchmark)
    assert result.time_weighted == pytest.approx(-0.01)
    assert result.benchmark == pytest.approx(0.02) and result.excess == pytest.approx(-0.03)
    assert result.money_weighted is not None and result.money_weighted < 0


def _user() -> str:
    return f"perf-{uuid.uuid4().hex[:10]}@example.com"


async def test_performance_risk_and_optimisation_through_the_api(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    pid = (await client.post("/api/v1/portfolio", json={"name": "P"}, headers=user)).json()["id"]
    url = f"/api/v1/portfolio/{pid}/transactions"
    for body in (
        {"type": "deposit", "amount": "20000", "date": "2021-01-04"},
        {"type": "buy", "ticker": "KO", "quantity": "100", "price": "52", "date": "2021-01-05"},
        {"type": "buy", "ticker": "MSFT", "quantity": "20", "price": "215", "date": "2021-01-05"},
        {"type": "buy", "ticker": "XOM", "quantity": "50", "price": "44", "date": "2021-01-05"},
    ):
        assert (await client.post(url, json=body, headers=user)).status_code == 201
    performance = (await client.get(f"/api/v1/portfolio/{pid}/performance", headers=user)).json()
    assert performance["holdings_only"] is False and performance["benchmark"] == "SPX"
    history = performance["history"]
    assert history[0]["date"] == "2021-01-04" and history[0]["value"] == pytest.approx(20000)
    assert "2021-01-18" not in {p["date"] for p in history}  # Martin Luther King Day: no session
    periods = {p["period"]: p for p in performance["periods"]}
    assert list(periods) == ["1D", "1W", "1M", "YTD", "1Y", "Max"]
    one_year = periods["1Y"]
    assert one_year["benchmark"] is not None and -1 < one_year["time_weighted"] < 3

    risk = await client.get(f"/api/v1/portfolio/{pid}/risk", headers=user)
    assert risk.status_code == 200, risk.text
    metrics = risk.json()["metrics"]
    assert metrics["days"] == 252 and 0 < metrics["volatility"] < 1
    assert 0 < metrics["var_95"] <= metrics["cvar_95"] and 0 < metrics["max_drawdown"] < 1
    assert metrics["beta"] is not None and 0 < metrics["beta"] < 2
    allocation = risk.json()["allocation"]
    assert set(allocation) == {"Consumer Staples", "Information Technology", "Energy", "Cash"}
    assert sum(allocation.values()) == pytest.approx(1.0)
    correlation = risk.json()["correlation"]
    assert correlation["KO"]["KO"] == pytest.approx(1.0) and -1 < correlation["KO"]["XOM"] < 1

    for method in ("min_variance", "hrp", "max_sharpe"):
        suggestion = await client.get(
            f"/api/v1/portfolio/{pid}/optimize", params={"method": method}, headers=user
        )
        assert suggestion.status_code == 200, suggestion.text
        body = suggestion.json()
        assert set(body["weights"]) == {"KO", "MSFT", "XOM"}
        assert sum(body["weights"].values()) == pytest.approx(1.0, abs=1e-6)
        assert min(body["weights"].values()) >= -1e-9  # long only
        assert "Not financial advice" in body["note"]


async def test_risk_cross_checks_volatility_against_pandas(client: httpx.AsyncClient) -> None:
    """A holdings-only portfolio of one stock: its daily returns are the stock's own."""
    user = await sign_up(client, _user())
    pid = (await client.post("/api/v1/portfolio", json={"name": "One"}, headers=user)).json()["id"]
    await client.post(
        f"/api/v1/portfolio/{pid}/transactions",
        json={
            "type": "buy",
            "ticker": "PG",
            "quantity": "10",
            "price": "100",
            "date": "2021-06-01",
        },
        headers=user,
    )
    risk = (
        await client.get(f"/api/v1/portfolio/{pid}/risk?lookback_days=100", headers=user)
    ).json()
    performance = (await client.get(f"/api/v1/portfolio/{pid}/performance", headers=user)).json()
    values = pd.Series([p["value"] for p in performance["history"]])
    expected = values.pct_change().dropna().iloc[-100:].std() * math.sqrt(252)
    assert risk["metrics"]["volatility"] == pytest.approx(expected, rel=1e-6)
    assert performance["holdings_only"] is True
    assert np.isclose(performance["history"][0]["flow"], 1000.0)


async def test_empty_or_thin_portfolios_get_clear_answers(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    pid = (await client.post("/api/v1/portfolio", json={"name": "E"}, headers=user)).json()["id"]
    empty = (await client.get(f"/api/v1/portfolio/{pid}/performance", headers=user)).json()
    assert empty["history"] == [] and empty["periods"] == []
    risk = await client.get(f"/api/v1/portfolio/{pid}/risk", headers=user)
    assert risk.status_code == 422 and risk.json()["code"] == "no_history"
    optimize = await client.get(f"/api/v1/portfolio/{pid}/optimize", headers=user)
    assert optimize.status_code == 422 and optimize.json()["code"] == "too_few_holdings"
