"""A/B persistence and outcomes: weights with an audit trail, logged forecasts scored against the
bars that arrive later, the Diebold-Mariano verdict and the `stockcopilot ab` commands."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

import asyncpg
import httpx
import numpy as np
import pandas as pd
import pytest

from api.db.ab import (
    AbWeightRepository,
    PredictionLogRepository,
    ResolvedLoss,
    challenger_weight,
)
from api.services.outcomes import MIN_VERDICT_DATES, ab_report
from pipelines.models import default_actor
from tests.serving.conftest import Caller, caller_on, logged
from tests.utils import invoke
from training.metrics import diebold_mariano, row_pinball


def _pinball_by_hand(y: float, q10: float, q50: float, q90: float) -> float:
    losses = [
        max(tau * (y - q), (tau - 1) * (y - q)) for q, tau in ((q10, 0.1), (q50, 0.5), (q90, 0.9))
    ]
    return sum(losses) / 3


# ---------------------------------------------------------------- weights


async def test_weight_defaults_to_champion_only_and_changes_are_audited(
    pool: asyncpg.Pool,
) -> None:
    repo = AbWeightRepository(pool)
    assert await repo.get("ensemble") == 0.0  # never set: all traffic to the champion
    before = await repo.get("transformer")
    was_set = bool(await repo.history("transformer"))
    first = await repo.set("transformer", 0.2, "alice", "start the test")
    assert first.from_weight == (before if was_set else None)
    assert await repo.get("transformer") == 0.2
    assert await challenger_weight(pool, "transformer") == 0.2  # what serving reads, no restart
    second = await repo.set("transformer", 0.35, "bob", "more traffic")
    assert (second.from_weight, second.to_weight) == (0.2, 0.35)
    assert await challenger_weight(pool, "transformer") == 0.35
    latest, previous = (await repo.history("transformer"))[:2]
    assert (latest.from_weight, latest.to_weight, latest.actor, latest.reason) == (
        0.2,
        0.35,
        "bob",
        "more traffic",
    )
    assert (previous.to_weight, previous.actor, previous.reason) == (0.2, "alice", "start the test")
    assert latest.at is not None and previous.at is not None and latest.at >= previous.at
    stored = await pool.fetchrow(
        "SELECT challenger_weight, actor, reason FROM ab_weights WHERE family = 'transformer'"
    )
    assert tuple(stored) == (0.35, "bob", "more traffic")


async def test_weight_outside_zero_to_one_is_refused(pool: asyncpg.Pool) -> None:
    repo = AbWeightRepository(pool)
    events = len(await repo.history("transformer"))
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="between 0 and 1"):
            await repo.set("transformer", bad, "alice", "typo")
    with pytest.raises(asyncpg.CheckViolationError):  # the table refuses it too
        await pool.execute(
            "INSERT INTO ab_weights (family, challenger_weight, actor) VALUES ('x', 2, 'a')"
        )
    assert len(await repo.history("transformer")) == events


# ---------------------------------------------------------------- logging and outcomes


async def test_served_forecast_is_logged_and_scored_against_later_bars(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    response = await api.get(
        "/api/v1/predictions/KO", params={"as_of": "2022-06-01", "model": "lstm", "horizon": 5}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["as_of"] == "2022-06-01"
    await logged(pool, ["KO"], 3, date(2022, 6, 1), "lstm")
    rows = await pool.fetch(
        """SELECT id, horizon, family, version, variant, live, q10, q50, q90 FROM prediction_log
           WHERE ticker = 'KO' AND as_of = '2022-06-01' AND family = 'lstm' ORDER BY horizon"""
    )
    assert [r["horizon"] for r in rows] == [1, 5, 20]  # every horizon the model returned
    assert all((r["version"], r["variant"]) == ("1", "champion") for r in rows)
    assert not any(r["live"] for r in rows)  # KO has later bars: a look back, not live
    row = next(r for r in rows if r["horizon"] == 5)
    assert {q: row[q] for q in ("q10", "q50", "q90")} == body["log_return_quantiles"]

    repo = PredictionLogRepository(pool)
    assert await repo.resolve_due() >= 3  # (other tests' past as-of forecasts are due too)
    assert await repo.resolve_due() == 0  # idempotent

    bars = await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = 'KO' AND date >= '2022-06-01' "
        "ORDER BY date LIMIT 6"
    )
    assert bars[0]["date"] == date(2022, 6, 1)
    y = math.log(bars[5]["close"] / bars[0]["close"])  # 5 trading days later, not 5 days
    outcome = await pool.fetchrow(
        "SELECT * FROM prediction_outcomes WHERE prediction_id = $1", row["id"]
    )
    assert outcome["outcome_date"] == bars[5]["date"]
    assert outcome["realised_log_return"] == pytest.approx(y, rel=1e-12)
    expected = _pinball_by_hand(y, row["q10"], row["q50"], row["q90"])
    assert outcome["pinball_loss"] == pytest.approx(expected, rel=1e-12)
    frame = pd.DataFrame([{"y": y, "q10": row["q10"], "q50": row["q50"], "q90": row["q90"]}])
    assert outcome["pinball_loss"] == pytest.approx(row_pinball(frame)[0], rel=1e-12)


async def _bars(pool: asyncpg.Pool, ticker: str, start: date, end: date) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = $1 AND date BETWEEN $2 AND $3 ORDER BY date",
        ticker,
        start,
        end,
    )


async def _upload(
    api: httpx.AsyncClient, ticker: str, rows: list[asyncpg.Record], headers: dict[str, str]
) -> None:
    """Bars arriving for `ticker` through the admin CSV import."""
    csv = "date,close\n" + "".join(f"{r['date']},{r['close']}\n" for r in rows)
    response = await api.post(
        "/api/v1/admin/bars/import",
        params={"ticker": ticker},
        files={"file": (f"{ticker.lower()}.csv", csv.encode(), "text/csv")},
        headers=headers,
    )
    assert response.status_code == 201, response.text


async def test_forecast_waits_for_its_outcome_bar_to_arrive(
    api: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    """A ticker whose bars stop at as-of: nothing resolves until the horizon-th bar is imported."""
    ko = await _bars(pool, "KO", date(2020, 1, 1), date(2022, 8, 1))
    cut = next(i for i, r in enumerate(ko) if r["date"] == date(2022, 6, 1))
    await _upload(api, "ABLIVE", ko[: cut + 1], admin_headers)
    response = await api.get("/api/v1/predictions/ABLIVE", params={"model": "lstm"})
    assert response.status_code == 200 and response.json()["as_of"] == "2022-06-01"
    await logged(pool, ["ABLIVE"], 3)
    repo = PredictionLogRepository(pool)
    await repo.resolve_due("lstm")
    pending = """SELECT p.horizon, o.prediction_id IS NOT NULL AS resolved
                 FROM prediction_log p LEFT JOIN prediction_outcomes o ON o.prediction_id = p.id
                 WHERE p.ticker = 'ABLIVE' ORDER BY p.horizon"""
    assert [tuple(r) for r in await pool.fetch(pending)] == [(1, False), (5, False), (20, False)]
    assert await pool.fetchval("SELECT bool_and(live) FROM prediction_log WHERE ticker = 'ABLIVE'")

    await _upload(
        api, "ABLIVE", ko[cut + 1 : cut + 6], admin_headers
    )  # the next five trading days arrive
    assert await repo.resolve_due("lstm") == 2
    assert [tuple(r) for r in await pool.fetch(pending)] == [(1, True), (5, True), (20, False)]
    y1 = await pool.fetchval(
        """SELECT o.realised_log_return FROM prediction_log p
           JOIN prediction_outcomes o ON o.prediction_id = p.id
           WHERE p.ticker = 'ABLIVE' AND p.horizon = 1"""
    )
    assert y1 == pytest.approx(math.log(ko[cut + 1]["close"] / ko[cut]["close"]), rel=1e-12)


# ---------------------------------------------------------------- report


def _rows(
    champion: float, challenger: float, dates: int = 150, tickers: int = 3, seed: int = 7
) -> list[ResolvedLoss]:
    """Both variants on the same (date, ticker) keys; losses centred on the given means."""
    rng = np.random.default_rng(seed)
    start = date(2024, 1, 1)
    out = []
    for d in range(dates):
        for t in range(tickers):
            common = rng.gamma(2.0, 0.005)  # the market's noise hits both variants alike
            for variant, mean, version in (
                ("champion", champion, "1"),
                ("challenger", challenger, "2"),
            ):
                loss = max(0.0, mean + common + rng.normal(0, 0.002))
                out.append(ResolvedLoss(start + timedelta(d), f"T{t}", 5, variant, version, loss))
    return out


def test_report_promotes_a_challenger_that_loses_significantly_less() -> None:
    rows = _rows(champion=0.02, challenger=0.01)
    report = ab_report(rows, horizon=5)
    assert report.method == "paired" and report.n_pairs == 450 and report.n_dates == 150
    assert report.mean_loss_challenger < report.mean_loss_champion
    assert report.dm_stat < 0 and report.p_value < 0.05
    assert report.recommendation == "promote challenger"
    assert report.versions == {"champion": ["1"], "challenger": ["2"]}
    # the walk-forward evaluation's test, with the small-sample correction of live reports
    by_variant = {
        v: pd.Series(
            [r.loss for r in rows if r.variant == v],
            index=pd.DatetimeIndex([r.as_of for r in rows if r.variant == v]),
        )
        for v in ("champion", "challenger")
    }
    expected = diebold_mariano(
        by_variant["challenger"], by_variant["champion"], 5, small_sample=True
    )
    assert (report.dm_stat, report.p_value) == pytest.approx(expected)


def test_report_keeps_a_champion_that_loses_significantly_less() -> None:
    report = ab_report(_rows(champion=0.01, challenger=0.02), horizon=5)
    assert report.dm_stat > 0 and report.p_value < 0.05
    assert report.recommendation == "keep champion"


def test_report_on_equal_variants_finds_no_difference() -> None:
    report = ab_report(_rows(champion=0.015, challenger=0.015), horizon=5)
    assert report.p_value > 0.2
    assert report.recommendation == "no significant difference (n=450)"


def test_report_ignores_other_horizons_and_needs_ten_dates() -> None:
    rows = _rows(0.02, 0.01, dates=9)
    rows += [ResolvedLoss(r.as_of, r.ticker, 20, r.variant, r.version, r.loss) for r in rows]
    report = ab_report(rows, horizon=5)
    assert report.n_pairs == 9 and math.isnan(report.p_value)  # 9 shared dates: too few
    assert report.recommendation == "too little evidence yet: 9 of 120 dates (n=9)"
    assert (
        ab_report([], horizon=5).recommendation == "too little evidence yet: 0 of 120 dates (n=0)"
    )


def test_report_recommends_nothing_before_enough_dates_however_small_the_p_value() -> None:
    short = ab_report(_rows(champion=0.02, challenger=0.01, dates=MIN_VERDICT_DATES - 1), 5)
    assert short.p_value < 1e-6  # "significant", on a sample the test cannot be trusted on
    assert short.recommendation.startswith("too little evidence yet: 119 of 120 dates")


def test_report_compares_per_date_means_when_variants_saw_different_tickers() -> None:
    """Sticky routing: callers of one variant asked for other tickers than the other's."""
    rows = [
        r
        for r in _rows(champion=0.02, challenger=0.01, tickers=4)
        if (r.variant == "champion") == (r.ticker in ("T0", "T1"))
    ]
    report = ab_report(rows, horizon=5)
    assert report.method == "per-date means" and report.n_pairs == 150 and report.n_dates == 150
    per_date = pd.DataFrame([vars(r) for r in rows]).groupby(["variant", "as_of"])["loss"].mean()
    assert report.mean_loss_champion == pytest.approx(per_date["champion"].mean())
    assert report.mean_loss_challenger == pytest.approx(per_date["challenger"].mean())
    assert report.recommendation == "promote challenger"


# ---------------------------------------------------------------- CLI


async def test_cli_ab_set_stores_and_audits_the_weight(cli_env: None, pool: asyncpg.Pool) -> None:
    before = await AbWeightRepository(pool).get("lstm")
    result = await invoke(
        "ab", "set", "--model", "lstm", "--challenger-weight", "0.2", "--reason", "canary"
    )
    assert result.exit_code == 0, result.output
    assert "lstm challenger weight:" in result.output and "→ 0.2" in result.output
    assert await challenger_weight(pool, "lstm") == 0.2
    event = (await AbWeightRepository(pool).history("lstm"))[0]
    assert (event.to_weight, event.actor, event.reason) == (0.2, default_actor(), "canary")
    assert event.from_weight in (None, before)

    for args, message in (
        (("--model", "lstm", "--challenger-weight", "1.5"), "between 0 and 1"),
        (("--model", "gpt", "--challenger-weight", "0.1"), "unknown model"),
    ):
        bad = await invoke("ab", "set", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert await challenger_weight(pool, "lstm") == 0.2


async def test_cli_ab_report_scores_served_forecasts_and_tests_the_variants(
    cli_env: None,
    api: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    mint_user: Callable[[], Awaitable[Caller]],
) -> None:
    """Bars arrive five days at a time for two imported tickers; after each arrival both hybrid
    variants forecast from the newest bar (live). The CLI then resolves and tests them."""
    callers = {flag: await caller_on(mint_user, "hybrid", flag) for flag in (False, True)}
    source = {
        "ABREPA": await _bars(pool, "KO", date(2021, 1, 1), date(2022, 6, 1)),
        "ABREPB": await _bars(pool, "MSFT", date(2021, 1, 1), date(2022, 6, 1)),
    }
    cut = 300
    for ticker, rows in source.items():
        await _upload(api, ticker, rows[:cut], admin_headers)
    for step in range(10):
        for challenger in (False, True):
            response = await api.post(
                "/api/v1/predictions/batch",
                json={"tickers": list(source), "horizon": 5, "model": "hybrid"},
                headers=callers[challenger],
            )
            assert response.status_code == 200, response.text
            variants = {p["model"]["variant"] for p in response.json()["predictions"]}
            assert variants == {"challenger" if challenger else "champion"}
        for ticker, rows in source.items():  # the next five trading days arrive
            await _upload(api, ticker, rows[cut + 5 * step : cut + 5 * step + 5], admin_headers)
    await logged(pool, list(source), 10 * 2 * 2 * 3)  # steps x variants x tickers x horizons
    live = await pool.fetchval(
        "SELECT bool_and(live) FROM prediction_log WHERE ticker IN ('ABREPA', 'ABREPB')"
    )
    assert live is True

    result = await invoke("ab", "report", "--model", "hybrid", "--horizon", "5")
    assert result.exit_code == 0, result.output
    expected = ab_report(await PredictionLogRepository(pool).resolved_losses("hybrid", 5), 5)
    assert expected.method == "paired" and expected.n_pairs == 20 and expected.n_dates == 10
    assert "paired" in result.output and "n=20 (10 dates)" in result.output
    assert f"recommendation: {expected.recommendation}" in result.output
    # the fixture's hybrid challenger is the champion's network logged again: equal losses
    assert expected.mean_loss_challenger == pytest.approx(expected.mean_loss_champion)
    assert expected.recommendation == "too little evidence yet: 10 of 120 dates (n=20)"
    assert await PredictionLogRepository(pool).resolve_due("hybrid") == 0  # the CLI resolved them

    bad = await invoke("ab", "report", "--model", "hybrid", "--horizon", "3")
    assert bad.exit_code == 2 and "horizon 3 is not offered" in bad.output
