"""Similarity search over real return paths with pgvector: a planted analogue is found first,
the query's own overlapping windows are excluded, and outcomes are summarised."""

from __future__ import annotations

import math

import asyncpg
import httpx
import numpy as np
import pandas as pd
import pytest

from features.bars import ticker_frame
from features.similarity import embed_all, embed_latest
from tests.utils import invoke


def test_embeddings_are_shape_only_and_look_only_backwards(goog: pd.DataFrame) -> None:
    close = goog["close"].iloc[:400]
    frame = embed_all(close, 30)
    assert frame.index[0] == close.index[30]
    first = frame["embedding"].iloc[0]
    assert first.shape == (30,) and abs(first.mean()) < 1e-5 and abs(first.std() - 1) < 1e-4
    scaled = embed_latest(close.iloc[:31] * 7.5, 30)  # a price level does not change the shape
    np.testing.assert_allclose(scaled, first, atol=1e-5)
    assert frame["fwd_5"].iloc[0] == pytest.approx(math.log(close.iloc[35] / close.iloc[30]))
    assert frame["fwd_20"].iloc[-1] != frame["fwd_20"].iloc[-1]  # NaN: the future is unknown


async def test_a_planted_analogue_is_the_nearest_match(
    cli_env: None,
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    bundled_bars: pd.DataFrame,
) -> None:
    result = await invoke(
        "similarity", "build", "--window", "30", "--ticker", "KO", "--ticker", "XOM"
    )
    assert result.exit_code == 0, result.output
    assert "for 2 ticker(s)" in result.output
    assert await pool.fetchval("SELECT count(*) FROM return_windows WHERE window_len = 30") > 10_000

    # PLANT's last 31 closes repeat KO's path into 2015-06-30 at a tenth of the price
    ko = ticker_frame(bundled_bars, "KO")["close"]
    source = ko.loc[:"2015-06-30"].iloc[-31:]
    history = ko.loc["2020-01-01":"2020-12-31"].iloc[:100] / 4  # unrelated earlier bars
    planted = pd.concat(
        [history, pd.Series(source.to_numpy() / 10, index=pd.bdate_range("2021-01-04", periods=31))]
    )
    csv = "date,close\n" + "".join(f"{d.date()},{c:.6f}\n" for d, c in planted.items())
    response = await client.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "PLANT"},
        files={"file": ("plant.csv", csv.encode(), "text/csv")},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text

    found = await client.get("/api/v1/analysis/PLANT/similar", params={"window": 30, "k": 5})
    assert found.status_code == 200, found.text
    body = found.json()
    best = body["matches"][0]
    assert (best["ticker"], best["date"]) == ("KO", "2015-06-30")
    assert best["distance"] < 1e-3  # prices are rounded to 6 digits in the CSV
    assert len(body["matches"]) == 5
    distances = [m["distance"] for m in body["matches"]]
    assert distances == sorted(distances)
    assert body["outcomes"]["20"]["n"] == 5
    assert (
        body["outcomes"]["5"]["p10"]
        <= body["outcomes"]["5"]["median"]
        <= body["outcomes"]["5"]["p90"]
    )


async def test_the_query_never_matches_its_own_overlapping_windows(
    client: httpx.AsyncClient,
) -> None:
    body = (
        await client.get(
            "/api/v1/analysis/KO/similar", params={"window": 30, "k": 20, "end": "2018-06-29"}
        )
    ).json()
    assert body["as_of"] == "2018-06-29"
    for match in body["matches"]:
        assert match["date"] <= "2018-05-30"  # analogues' outcomes were known by then
    bad = await client.get("/api/v1/analysis/KO/similar", params={"window": 25})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_window"
    unbuilt = await client.get("/api/v1/analysis/KO/similar", params={"window": 60})
    assert unbuilt.status_code == 503 and unbuilt.json()["code"] == "similarity_not_built"
