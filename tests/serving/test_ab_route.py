"""GET /api/v1/models/{family}/ab: the live A/B test of a family's champion and challenger,
computed as `stockcopilot ab report` computes it, on forecasts logged over real stored bars."""

from __future__ import annotations

import math
from datetime import date

import asyncpg
import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from api.db.ab import LoggedPrediction, PredictionLogRepository
from api.services.outcomes import ab_report
from contracts import HORIZONS, Forecast
from tests.conftest import ANONYMOUS
from training import registry

TICKER = "XOM"


async def _closes(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """XOM's closes over 2021: 60 days of history, then the as-of dates."""
    return await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = $1 AND date BETWEEN $2 AND $3 ORDER BY date",
        TICKER,
        date(2021, 1, 1),
        date(2021, 12, 31),
    )


def _band(as_of: date, sigma: float, horizon: int, widen: float) -> Forecast:
    """A zero-centred 80 % band of a normal log return, `widen` times as wide as it should be."""
    half = widen * 1.2816 * sigma * math.sqrt(horizon)
    return Forecast(ticker=TICKER, as_of=as_of, horizon=horizon, q10=-half, q50=0.0, q90=half)


async def _log_live_forecasts(
    pool: asyncpg.Pool, champion: str, challenger: str
) -> list[LoggedPrediction]:
    """150 dates of live hybrid forecasts at h=1 (the champion's bands three times too wide, the
    challenger's right) and h=20 (both the same); h=5 is left to the CLI's test."""
    bars = await _closes(pool)
    returns = np.diff(np.log([r["close"] for r in bars[:61]]))
    sigma = float(returns.std())
    rows = []
    for bar in bars[60:210]:
        for horizon, widths in ((1, (3.0, 1.0)), (20, (1.0, 1.0))):
            for variant, version, widen in zip(
                ("champion", "challenger"), (champion, challenger), widths, strict=True
            ):
                forecast = _band(bar["date"], sigma, horizon, widen)
                rows.append(LoggedPrediction.of(forecast, "hybrid", version, variant, True))
    assert await PredictionLogRepository(pool).record(rows) == len(rows)  # none logged before
    return rows


def _as_json(value: float) -> object:
    """What the route should send for `value`: null for NaN, else (about) the number."""
    return None if math.isnan(value) else pytest.approx(value)


async def test_the_route_reports_what_ab_report_computes_on_the_live_outcomes(
    api: httpx.AsyncClient, pool: asyncpg.Pool, serving_registry: MlflowClient
) -> None:
    champion = registry.alias_version(serving_registry, "hybrid", "champion")
    challenger = registry.alias_version(serving_registry, "hybrid", "challenger")
    assert champion is not None and challenger is not None
    await _log_live_forecasts(pool, champion, challenger)

    response = await api.get("/api/v1/models/hybrid/ab")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["family"], body["champion"], body["challenger"]) == (
        "hybrid",
        champion,
        challenger,
    )
    assert body["challenger_weight"] == 0.5  # the serving fixture's weight
    assert [h["horizon"] for h in body["horizons"]] == list(HORIZONS)

    # the route resolved the outcomes; the same rows, through the same report, give the same
    pair = {"champion": champion, "challenger": challenger}
    rows = await PredictionLogRepository(pool).resolved_losses("hybrid", None, pair)
    for out in body["horizons"]:
        expected = ab_report(rows, out["horizon"])
        assert (out["method"], out["n_compared"], out["dates_compared"]) == (
            expected.method,
            expected.n_pairs,
            expected.n_dates,
        )
        for variant, mean_loss in (
            ("champion", expected.mean_loss_champion),
            ("challenger", expected.mean_loss_challenger),
        ):
            seen = out[variant]
            mine = {
                (r.as_of, r.ticker)
                for r in rows
                if (r.variant, r.horizon) == (variant, out["horizon"])
            }
            assert seen["n"] == expected.forecasts[variant] == len(mine)
            assert seen["dates"] == expected.dates[variant] == len({d for d, _ in mine})
            assert seen["versions"] == expected.versions[variant]
            assert seen["mean_pinball_loss"] == _as_json(mean_loss)
        assert out["dm_statistic"] == _as_json(expected.dm_stat)
        assert out["p_value"] == _as_json(expected.p_value)
        assert out["recommendation"] == expected.recommendation

    h1, h20 = body["horizons"][0], body["horizons"][2]
    assert h1["method"] == "paired" and h1["challenger"]["n"] >= 150
    assert h1["challenger"]["versions"] == [challenger]
    assert h1["challenger"]["mean_pinball_loss"] < h1["champion"]["mean_pinball_loss"]
    assert h1["dm_statistic"] < 0 and h1["recommendation"] == "promote challenger"
    assert not h20["recommendation"].startswith("promote")  # the same bands: no difference

    one = await api.get("/api/v1/models/hybrid/ab", params={"horizon": 1})
    assert one.status_code == 200, one.text
    assert one.json()["horizons"] == [h1]


async def test_a_family_without_a_challenger_reports_nulls_not_nans(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/api/v1/models/garch/ab", params={"horizon": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["challenger"] is None and body["champion"] is not None
    (h5,) = body["horizons"]
    assert h5["challenger"] == {"versions": [], "n": 0, "dates": 0, "mean_pinball_loss": None}
    assert h5["n_compared"] == 0 and h5["champion"]["mean_pinball_loss"] is None
    assert h5["dm_statistic"] is None and h5["p_value"] is None
    assert h5["recommendation"] == "too little evidence yet: 0 of 120 dates (n=0)"


async def test_an_unknown_family_or_horizon_is_a_validation_error(api: httpx.AsyncClient) -> None:
    for url, params in (("/api/v1/models/gpt/ab", {}), ("/api/v1/models/lstm/ab", {"horizon": 3})):
        response = await api.get(url, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"


async def test_an_api_key_without_read_predictions_is_refused(api: httpx.AsyncClient) -> None:
    async def key(*scopes: str) -> dict[str, str]:
        made = await api.post(
            "/api/v1/users/me/api-keys", json={"name": "ab", "scopes": list(scopes)}
        )
        assert made.status_code == 201, made.text
        return {**ANONYMOUS, "X-API-Key": made.json()["key"]}

    refused = await api.get("/api/v1/models/lstm/ab", headers=await key("read:market"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "insufficient_scope"
    assert "read:predictions" in refused.json()["detail"]
    allowed = await api.get("/api/v1/models/lstm/ab", headers=await key("read:predictions"))
    assert allowed.status_code == 200, allowed.text
