"""The classical volatility models on data simulated from a known GJR-GARCH-t: they recover its
parameters, beat a static-volatility random walk, cover their bands, and never look ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch.univariate import GARCH, StudentsT, ZeroMean

from training.classical import CLASSICAL, EWMA_LAMBDA, fit_forecast, forward_sums
from training.metrics import row_pinball

HORIZONS = (1, 5, 20)
TRUE = {"omega": 0.02, "alpha[1]": 0.06, "gamma[1]": 0.12, "beta[1]": 0.85, "nu": 6.0}
Z80 = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])


@pytest.fixture(scope="module")
def returns() -> pd.Series:
    """8000 daily log returns from GJR-GARCH(1,1)-t with the parameters above (percent units,
    as `arch` simulates them, scaled to fractions): 6000 to fit, the rest to test."""
    model = ZeroMean(
        volatility=GARCH(p=1, o=1, q=1), distribution=StudentsT(seed=np.random.default_rng(7))
    )
    simulated = model.simulate(list(TRUE.values()), 8000, burn=500)["data"].to_numpy()
    return pd.Series(simulated / 100, index=pd.bdate_range("1990-01-01", periods=8000))


def _fit_end(returns: pd.Series) -> pd.Timestamp:
    return returns.index[5999]


def _test_origins(returns: pd.Series) -> pd.DatetimeIndex:
    return returns.index[6020:7970]


def test_gjr_and_garch_recover_the_simulated_parameters(returns: pd.Series) -> None:
    gjr = fit_forecast("gjr", returns, _fit_end(returns), HORIZONS).params
    for name in ("alpha[1]", "gamma[1]", "beta[1]"):
        assert gjr[name] == pytest.approx(TRUE[name], abs=0.04), name
    assert 4 < gjr["nu"] < 9
    garch = fit_forecast("garch", returns, _fit_end(returns), HORIZONS).params
    # without the leverage term, GARCH absorbs it: α ≈ α + γ/2, the same persistence
    persistence = TRUE["alpha[1]"] + TRUE["gamma[1]"] / 2 + TRUE["beta[1]"]
    assert garch["alpha[1]"] + garch["beta[1]"] == pytest.approx(persistence, abs=0.03)


@pytest.mark.parametrize("model", CLASSICAL)
def test_each_model_beats_a_static_random_walk_and_covers_its_band(
    returns: pd.Series, model: str
) -> None:
    fit_end, origins = _fit_end(returns), _test_origins(returns)
    forecast = fit_forecast(model, returns, fit_end, HORIZONS)
    quantiles = forecast.quantiles(origins, HORIZONS)
    outcomes = forward_sums(returns, HORIZONS).reindex(origins)
    static_sigma = returns.loc[:fit_end].std()
    for j, h in enumerate(HORIZONS):
        y = outcomes[h].to_numpy()
        frame = pd.DataFrame(
            {"y": y, "q10": quantiles[:, j, 0], "q50": 0.0, "q90": quantiles[:, j, 2]}
        )
        walk = frame.assign(
            q10=Z80[0] * static_sigma * np.sqrt(h), q90=Z80[2] * static_sigma * np.sqrt(h)
        )
        skill = 1 - row_pinball(frame).mean() / row_pinball(walk).mean()
        inside = np.mean((y >= frame["q10"]) & (y <= frame["q90"]))
        if h < 20:  # at 20 days the gain is real but small next to the noise of one sample
            assert skill > 0.01, (model, h, skill)
        assert 0.74 <= inside <= 0.86, (model, h, inside)


def test_ewma_follows_the_riskmetrics_recursion_by_hand() -> None:
    index = pd.bdate_range("2020-01-01", periods=300)
    r = pd.Series(np.tile([0.01, -0.02, 0.0, 0.03], 75), index=index)
    forecast = fit_forecast("ewma", r, index[-1], HORIZONS)
    level = float(np.mean(r.to_numpy()[:20] ** 2))
    for x in r.to_numpy()[:3]:
        level = EWMA_LAMBDA * level + (1 - EWMA_LAMBDA) * x**2
    assert forecast.variance.loc[index[2], 1] == pytest.approx(level)
    assert forecast.variance.loc[index[2], 5] == pytest.approx(5 * level)


@pytest.mark.parametrize("model", CLASSICAL)
def test_a_forecast_uses_only_returns_up_to_its_origin_and_the_fit_only_fit_rows(
    returns: pd.Series, model: str
) -> None:
    fit_end = _fit_end(returns)
    origin = returns.index[6500]
    later = returns.copy()
    later.loc[later.index > origin] *= 5  # a storm after the origin
    before = fit_forecast(model, returns, fit_end, HORIZONS)
    after = fit_forecast(model, later, fit_end, HORIZONS)
    assert after.params == pytest.approx(before.params)
    assert after.variance.loc[origin].to_numpy() == pytest.approx(
        before.variance.loc[origin].to_numpy()
    )
    for h in HORIZONS:
        assert after.z[h] == pytest.approx(before.z[h])


@pytest.mark.parametrize("model", ["garch", "gjr"])
def test_the_vectorised_garch_forecast_is_arch_s_own(returns: pd.Series, model: str) -> None:
    """Our one-filter recursion and closed-form multi-step sum give what `arch`'s (much slower)
    analytic forecast gives, at every origin."""
    from arch import arch_model

    fit_end = _fit_end(returns)
    ours = fit_forecast(model, returns, fit_end, HORIZONS)
    last = int(returns.index.searchsorted(fit_end, side="right"))
    params = pd.Series({k: v for k, v in ours.params.items() if k != "converged"})
    fixed = arch_model(
        returns.to_numpy() * 100, mean="Zero", p=1, o=int(model == "gjr"), q=1, dist="t"
    )
    fitted = fixed.fit(disp="off", last_obs=last, starting_values=params.to_numpy())
    theirs = fitted.forecast(
        params=params.to_numpy(), horizon=20, start=6900, reindex=False, method="analytic"
    ).variance.to_numpy()
    expected = np.cumsum(theirs, axis=1)[:, np.asarray(HORIZONS) - 1] / 100**2
    got = ours.variance.iloc[6900:].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-8)


def test_the_served_bundle_forecasts_what_the_walk_forward_scored(returns: pd.Series) -> None:
    """`ClassicalBundle` (serving) on the last 400 closes gives the walk-forward's forecast at
    that origin: the backcast's start has decayed away; a ticker it never saw gets a forecast
    at its own variance level."""
    from training.bundle import ClassicalBundle

    fit_end = _fit_end(returns)
    fitted = fit_forecast("gjr", returns, fit_end, HORIZONS)
    bundle = ClassicalBundle(
        "gjr", HORIZONS, {"SIM": fitted.params}, {"SIM": {h: list(q) for h, q in fitted.z.items()}}
    )
    closes = np.exp(np.concatenate([[0.0], np.cumsum(returns.to_numpy())]))
    index = pd.bdate_range("1989-12-29", periods=len(closes))
    tail = pd.Series(closes[-401:], index=index[-401:])
    served = bundle.predict_closes({"SIM": tail, "NEW": tail * 3.0}).set_index(
        ["ticker", "horizon"]
    )
    scored = fitted.quantiles(returns.index[-1:], HORIZONS)[0]
    for j, h in enumerate(HORIZONS):
        row = served.loc[("SIM", h)]
        np.testing.assert_allclose(row[["q10", "q50", "q90"]].to_numpy(float), scored[j], rtol=1e-4)
        new = served.loc[("NEW", h)]
        assert new["q10"] < 0 < new["q90"]
        assert 0.5 < new["q90"] / row["q90"] < 2  # same returns, so a similar band
