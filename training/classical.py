"""Classical volatility models: the strongest simple baselines, and a forecasting family of their
own. Their skill over a static-volatility random walk is volatility clustering, which they have
captured since the 1990s; a network earns its place only by beating them.

- `ewma`: RiskMetrics, λ = 0.94, nothing fitted;
- `garch`: GARCH(1,1) with Student-t innovations (the `arch` package);
- `gjr`: GJR-GARCH(1,1) with Student-t innovations (bad news raises volatility more);
- `har`: Corsi's HAR on daily squared returns (day, week and month components), OLS.

Each is fitted per ticker on fit rows only (returns dated up to `fit_end`) and then run forward
with its parameters fixed, so a forecast made at the close of day t uses returns up to t. Each
gives the 10/50/90 % quantiles of the h-day log return: centred on zero, scaled by its own
h-day variance forecast (the analytic multi-step forecast for the GARCH family, h × the next
day's for EWMA, HAR's own regression per horizon), with the standardised quantiles of its own
innovations, measured on its fit rows (so a fat-tailed model gets fat-tailed bands, and the
h-day aggregation is honest).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CLASSICAL = ("ewma", "garch", "gjr", "har")
QUANTILE_LEVELS = (0.1, 0.5, 0.9)
EWMA_LAMBDA = 0.94
HAR_LAGS = (1, 5, 22)
SCALE = 100.0  # the `arch` optimiser works on percent returns
VARIANCE_FLOOR = 1e-10
MIN_FIT_RETURNS = 250


@dataclass(frozen=True)
class VolatilityForecast:
    """h-day variance forecasts made at each origin, and the standardised quantiles to put on
    them (`z[h]` = the model's own 10/50/90 % quantiles of y_h / σ_h on its fit rows)."""

    model: str
    variance: pd.DataFrame  # index: origin dates, columns: horizons
    z: dict[int, np.ndarray]
    params: dict[str, float]

    def quantiles(self, origins: pd.DatetimeIndex, horizons: Sequence[int]) -> np.ndarray:
        """[len(origins), len(horizons), 3] quantiles of the h-day log return."""
        variance = self.variance.reindex(origins)[list(horizons)].to_numpy(float)
        sigma = np.sqrt(np.maximum(variance, VARIANCE_FLOOR))
        z = np.stack([self.z[h] for h in horizons])  # [horizons, 3]
        return sigma[:, :, None] * z[None, :, :]


def forward_sums(returns: pd.Series, horizons: Sequence[int]) -> pd.DataFrame:
    """y_h at each origin t: the log return from t's close to t + h's (NaN past the data)."""
    values = returns.to_numpy(float)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    out = {}
    for h in horizons:
        ahead = np.full(len(values), np.nan)
        ahead[: len(values) - h] = cumulative[1 + h :] - cumulative[1 : len(values) - h + 1]
        out[h] = ahead
    return pd.DataFrame(out, index=returns.index)


def _ewma(returns: pd.Series, horizons: Sequence[int]) -> tuple[pd.DataFrame, dict[str, float]]:
    r2 = returns.to_numpy(float) ** 2
    seed = float(np.mean(r2[:20])) if len(r2) else VARIANCE_FLOOR
    variance = np.empty(len(r2))
    level = seed
    for i, x in enumerate(r2):  # σ²(t+1 | t) = λ σ²(t | t−1) + (1 − λ) r²(t)
        level = EWMA_LAMBDA * level + (1 - EWMA_LAMBDA) * x
        variance[i] = level
    frame = pd.DataFrame({h: h * variance for h in horizons}, index=returns.index)
    return frame, {"lambda": EWMA_LAMBDA}


def _garch(
    returns: pd.Series, fit_end: pd.Timestamp, horizons: Sequence[int], asymmetric: bool
) -> tuple[pd.DataFrame, dict[str, float]]:
    from arch import arch_model

    scaled = returns.to_numpy(float) * SCALE
    last = _last_fit_position(returns, fit_end) + 1
    model = arch_model(
        scaled, mean="Zero", vol="GARCH", p=1, o=1 if asymmetric else 0, q=1, dist="t"
    )
    # `arch` re-enables its own warnings inside `fit`: record them instead of printing them,
    # and judge the fit by its result
    with warnings.catch_warnings(record=True):
        fitted = model.fit(disp="off", last_obs=last, options={"maxiter": 500})
        if fitted.convergence_flag != 0:  # retry from where the optimiser stopped
            fitted = model.fit(
                disp="off",
                last_obs=last,
                starting_values=fitted.params.to_numpy(),
                options={"maxiter": 2000},
            )
    params = fitted.params
    persistence = params["alpha[1]"] + params.get("gamma[1]", 0.0) / 2 + params["beta[1]"]
    if not np.all(np.isfinite(params.to_numpy())) or persistence >= 1:
        raise ValueError("the GARCH fit found no stationary solution")
    found = {str(k): float(v) for k, v in params.items()}
    one_step = garch_one_step(returns.to_numpy(float), found)
    frame = pd.DataFrame(garch_cumulative(one_step, found, horizons), index=returns.index)
    frame.columns = list(horizons)
    return frame, {**found, "converged": float(fitted.convergence_flag == 0)}


def har_components(returns: pd.Series) -> pd.DataFrame:
    """Corsi's regressors at each origin: mean squared return over the last 1, 5 and 22 days."""
    r2 = returns.pow(2)
    return pd.DataFrame({f"rv{lag}": r2.rolling(lag).mean() for lag in HAR_LAGS})


def _har(
    returns: pd.Series, fit_end: pd.Timestamp, horizons: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, float]]:
    x = har_components(returns)
    design = np.column_stack([np.ones(len(x)), x.to_numpy(float)])
    targets = forward_sums(returns.pow(2), horizons)  # realised h-day variance proxy
    end = _last_fit_position(returns, fit_end)
    usable = x.notna().all(axis=1).to_numpy()
    out, params = {}, {}
    for h in horizons:
        rows = usable & (np.arange(len(returns)) + h <= end)  # realised by fit_end
        beta, *_ = np.linalg.lstsq(design[rows], targets[h].to_numpy(float)[rows], rcond=None)
        out[h] = np.maximum(design @ beta, VARIANCE_FLOOR * h)
        params.update({f"h{h}.b{i}": float(b) for i, b in enumerate(beta)})
    return pd.DataFrame(out, index=returns.index), params


def _last_fit_position(returns: pd.Series, fit_end: pd.Timestamp) -> int:
    return int(returns.index.searchsorted(fit_end, side="right")) - 1


def _standardised_quantiles(
    variance: pd.DataFrame, returns: pd.Series, fit_end: pd.Timestamp, horizons: Sequence[int]
) -> dict[int, np.ndarray]:
    """The model's own quantiles of y_h / σ_h over origins whose outcome was known by fit_end."""
    outcomes = forward_sums(returns, horizons)
    end = _last_fit_position(returns, fit_end)
    z = {}
    for h in horizons:
        positions = np.arange(len(returns))
        realised = (positions + h <= end) & outcomes[h].notna().to_numpy()
        origins = returns.index[realised]
        var = variance[h].reindex(origins).to_numpy(float)
        ok = np.isfinite(var) & (var > 0)
        scaled = outcomes[h].to_numpy(float)[realised][ok] / np.sqrt(var[ok])
        if len(scaled) < 50:
            raise ValueError(f"too few fit rows to measure the {h}-day quantiles")
        levels = np.quantile(scaled, QUANTILE_LEVELS)
        levels[1] = 0.0  # the median of a zero-mean forecast: no directional claim
        z[h] = levels
    return z


def fit_forecast(
    model: str, returns: pd.Series, fit_end: pd.Timestamp, horizons: Sequence[int]
) -> VolatilityForecast:
    """Fit `model` on `returns` dated up to `fit_end`; forecasts at every origin after that
    use the returns up to the origin, parameters fixed."""
    returns = returns.dropna()
    if int((returns.index <= fit_end).sum()) < MIN_FIT_RETURNS:
        raise ValueError(f"{model} needs {MIN_FIT_RETURNS} daily returns up to {fit_end.date()}")
    if model == "ewma":
        variance, params = _ewma(returns, horizons)
    elif model in ("garch", "gjr"):
        variance, params = _garch(returns, fit_end, horizons, asymmetric=model == "gjr")
    elif model == "har":
        variance, params = _har(returns, fit_end, horizons)
    else:
        raise ValueError(f"unknown classical model {model!r}; known: {CLASSICAL}")
    z = _standardised_quantiles(variance, returns, fit_end, horizons)
    return VolatilityForecast(model, variance, z, params)


# The served classical family (`garch` in contracts): the stronger GARCH-type model on validation.
SERVED = ("garch", "gjr")
BACKCAST_DAYS = 75  # `arch`'s backcast: exponentially weighted mean of the first squared returns
BACKCAST_DECAY = 0.94
PARAM_NAMES = ("omega", "alpha[1]", "gamma[1]", "beta[1]")


def garch_one_step(returns: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """σ²(t+1 | t) after each return (log-return units), parameters fixed (percent units, as
    `arch` fits them): `arch`'s GARCH/GJR recursion (γ = 0 for GARCH) from its backcast, in one
    linear filter instead of a Python loop.

    σ²(t) = ω + (α + γ·1[r(t−1) < 0])·r²(t−1) + β·σ²(t−1).
    """
    from scipy.signal import lfilter

    r = np.asarray(returns, float) * SCALE
    omega, alpha, beta = params["omega"], params["alpha[1]"], params["beta[1]"]
    gamma = params.get("gamma[1]", 0.0)
    tau = min(BACKCAST_DAYS, len(r))
    weights = BACKCAST_DECAY ** np.arange(tau)
    backcast = float(np.sum(r[:tau] ** 2 * weights) / weights.sum())
    shocks = (alpha + gamma * (r < 0)) * r**2  # what each return adds to the next variance
    drive = np.concatenate([[omega + (alpha + gamma / 2 + beta) * backcast], omega + shocks])
    sigma2 = lfilter([1.0], [1.0, -beta], drive)  # σ²(0), ..., σ²(T): in-sample, then ahead
    return sigma2[1:] / SCALE**2


def garch_cumulative(
    one_step: np.ndarray, params: dict[str, float], horizons: Sequence[int]
) -> dict[int, np.ndarray]:
    """h-day variance forecasts from each one-step forecast: `arch`'s analytic multi-step
    forecast E σ²(T+k) = ω + p·E σ²(T+k−1), p = α + γ/2 + β, summed over k = 1..h in closed
    form (σ̄² + p^(k−1)·(σ²(T+1) − σ̄²), σ̄² = ω / (1 − p))."""
    p = params["alpha[1]"] + params.get("gamma[1]", 0.0) / 2 + params["beta[1]"]
    level = params["omega"] / (1 - p) / SCALE**2
    return {h: h * level + (one_step - level) * (1 - p**h) / (1 - p) for h in horizons}


def garch_cumulative_variance(
    returns: np.ndarray, params: dict[str, float], horizons: Sequence[int]
) -> np.ndarray:
    """[horizons] variance forecasts made after the last of `returns` (serving's path)."""
    cumulative = garch_cumulative(garch_one_step(returns, params)[-1:], params, horizons)
    return np.array([cumulative[h][0] for h in horizons])


def pooled_params(by_ticker: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median dynamics across fitted tickers, for a ticker with no fit of its own; its ω comes
    from variance targeting on its own returns (`target_omega`)."""
    return {
        name: float(np.median([p.get(name, 0.0) for p in by_ticker.values()]))
        for name in PARAM_NAMES
        if name != "omega"
    }


def target_omega(returns: np.ndarray, params: dict[str, float]) -> float:
    """ω that makes the unconditional variance equal the sample variance of `returns`."""
    persistence = params["alpha[1]"] + params.get("gamma[1]", 0.0) / 2 + params["beta[1]"]
    return float((1 - persistence) * np.mean((np.asarray(returns) * SCALE) ** 2))
