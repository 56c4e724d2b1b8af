"""The challenger's live guard: a challenger that loses the live A/B test significantly is
demoted (its alias removed, the rollback audited and announced), and never on thin evidence.

The decision is checked as a plain function; then the LSTM deployment's class runs in this
process (without Ray) against the real registry, Postgres and Redis with a planted challenger
whose bands are three times too wide.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from redis.asyncio import Redis

from api.db.ab import LoggedPrediction, PredictionLogRepository, ResolvedLoss
from api.services.outcomes import AbReport, ab_report
from api.settings import Settings
from contracts import HORIZONS, Forecast
from serving.guard import MIN_GUARD_DATES, challenger_verdict
from serving.replicas import FamilyForecaster
from tests.model_registry import log_and_register
from tests.serving.conftest import last_rollback, next_notification
from tests.utils import eventually
from training import registry

# ---------------------------------------------------------------- the decision


def _reports(
    champion: float, challenger: float, dates: int = MIN_GUARD_DATES + 30
) -> list[AbReport]:
    """Each horizon's report on both variants' losses for the same (date, ticker) keys."""
    rng = np.random.default_rng(11)
    rows = []
    for d in range(dates):
        for ticker in ("A", "B"):
            common = rng.gamma(2.0, 0.005)  # the market's noise hits both variants alike
            for horizon in HORIZONS:
                for variant, version, mean in (
                    ("champion", "1", champion),
                    ("challenger", "2", challenger),
                ):
                    loss = max(0.0, mean + common + rng.normal(0, 0.001))
                    as_of = date(2024, 1, 1) + timedelta(d)
                    rows.append(ResolvedLoss(as_of, ticker, horizon, variant, version, loss))
    return [ab_report(rows, horizon) for horizon in HORIZONS]


def test_a_challenger_that_loses_significantly_is_demoted_with_the_evidence() -> None:
    reports = _reports(champion=0.01, challenger=0.03)
    reason = challenger_verdict(reports, alpha=0.05)
    assert reason is not None
    assert "challenger version 2 loses to champion version 1" in reason
    first = reports[0]  # the first horizon that shows it
    assert f"h={first.horizon}:" in reason
    assert f"{first.mean_loss_challenger:.5f} vs {first.mean_loss_champion:.5f}" in reason
    assert f"DM {first.dm_stat:.2f}, p={first.p_value:.2g}" in reason


def test_an_equal_or_better_challenger_is_kept() -> None:
    # (on 200 dates: with the 20-lag HAC variance, a few dozen dates overstate significance)
    assert challenger_verdict(_reports(champion=0.03, challenger=0.01, dates=200)) is None
    assert challenger_verdict(_reports(champion=0.01, challenger=0.01, dates=200)) is None


def test_too_few_dates_give_no_verdict() -> None:
    reports = _reports(champion=0.01, challenger=0.03, dates=9)
    assert all(math.isnan(r.p_value) for r in reports)
    assert challenger_verdict(reports) is None
    # significant by the test, but on fewer dates than it needs to hold its size: no action
    short = _reports(champion=0.01, challenger=0.03, dates=MIN_GUARD_DATES - 1)
    assert any(r.p_value < 1e-3 for r in short) and challenger_verdict(short) is None


def test_the_level_is_bonferroni_corrected_over_the_horizons() -> None:
    (report, *_) = _reports(champion=0.01, challenger=0.03)
    borderline = replace(report, p_value=0.03)  # below alpha, above alpha / 3
    assert challenger_verdict([borderline], alpha=0.05) is None
    assert challenger_verdict([replace(borderline, p_value=0.01)], alpha=0.05) is not None
    worse_but_no_sign = replace(report, dm_stat=-5.0, p_value=1e-9)  # the champion loses
    assert challenger_verdict([worse_but_no_sign], alpha=0.05) is None


# ---------------------------------------------------------------- a real family deployment

TICKER = "JPM"


class _Lstm(FamilyForecaster):
    family = "lstm"


@pytest.fixture
async def planted(
    settings: Settings,
    registry_uri: str,
    registry_root: Path,
    serving_registry: MlflowClient,
    first_ingest: object,
) -> AsyncIterator[tuple[_Lstm, str, str]]:
    """The LSTM deployment's class in this process (aliases polled every 0.2 s), the champion's
    version and a new registered version for the challenger alias (a copy of the champion: the
    live evidence is planted in the prediction log). The challenger alias and the artefact root
    are put back afterwards for the other tests."""
    champion = registry.alias_version(serving_registry, "lstm", "champion")
    assert champion is not None
    assert registry.alias_version(serving_registry, "lstm", "challenger") is None
    bundle = registry.load_bundle("models:/stockcopilot-lstm@champion")
    challenger, _ = log_and_register(bundle, "lstm", registry_root / "lstm-wide-challenger")
    deployment = _Lstm(
        settings.model_copy(update={"mlflow_tracking_uri": registry_uri, "alias_poll_s": 0.2})
    )
    yield deployment, champion, challenger
    deployment.watch.stop()
    registry.configure(registry_uri, registry_root / "artifacts")
    with contextlib.suppress(MlflowException):  # already gone if it was demoted
        serving_registry.delete_registered_model_alias("stockcopilot-lstm", "challenger")


async def _log_bands(pool: asyncpg.Pool, champion: str, challenger: str) -> int:
    """Live forecasts of both variants on 150 past dates of JPM's real bars, at every horizon:
    the champion's 80 % band is a normal one of the realised volatility, the challenger's has
    q10/q90 three times as far from q50."""
    bars = await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = $1 AND date BETWEEN $2 AND $3 ORDER BY date",
        TICKER,
        date(2021, 1, 4),
        date(2021, 12, 31),
    )
    sigma = float(np.diff(np.log([r["close"] for r in bars[:61]])).std())
    rows = []
    for bar in bars[60:210]:
        for horizon in HORIZONS:
            half = 1.2816 * sigma * math.sqrt(horizon)
            for variant, version, widen in (
                ("champion", champion, 1.0),
                ("challenger", challenger, 3.0),
            ):
                forecast = Forecast(
                    ticker=TICKER,
                    as_of=bar["date"],
                    horizon=horizon,
                    q10=-widen * half,
                    q50=0.0,
                    q90=widen * half,
                )
                rows.append(LoggedPrediction.of(forecast, "lstm", version, variant, True))
    assert len({r.as_of for r in rows}) >= MIN_GUARD_DATES
    return await PredictionLogRepository(pool).record(rows)


async def test_a_challenger_with_bands_three_times_too_wide_is_demoted_on_live_outcomes(
    planted: tuple[_Lstm, str, str],
    serving_registry: MlflowClient,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    deployment, champion, challenger = planted
    await deployment.watch.vetted()
    serving_registry.set_registered_model_alias("stockcopilot-lstm", "challenger", challenger)

    async def serving_it() -> bool:
        return (await deployment.routing()).challenger == challenger

    assert await eventually(serving_it, 20), "the deployment never served the challenger"
    redis = Redis.from_url(settings.redis_url or "")
    notifications = redis.pubsub()
    await notifications.subscribe("notifications:models")
    assert await _log_bands(pool, champion, challenger) == 2 * 150 * len(HORIZONS)

    def demoted() -> bool:
        return registry.alias_version(serving_registry, "lstm", "challenger") is None

    assert await eventually(demoted, 30), "the losing challenger kept its alias"
    assert registry.alias_version(serving_registry, "lstm", "champion") == champion
    event = await last_rollback(pool, "lstm", challenger)
    assert event["to_version"] is None  # removed, nothing restored in its place
    assert (
        f"challenger version {challenger} loses to champion version {champion}" in (event["reason"])
    )
    message = await next_notification(notifications, redis)
    assert message is not None
    assert (message["type"], message["alias"]) == ("model_rollback", "challenger")
    assert (message["from_version"], message["to_version"]) == (challenger, None)

    async def no_challenger() -> bool:
        return (await deployment.routing()).challenger is None

    assert await eventually(no_challenger, 20), "the deployment kept serving the challenger"
