"""Baselines every model must beat, scored by the same evaluation code.

- random walk: zero drift, quantiles from the trailing 60-day volatility (Gaussian z-scores);
- historical drift: the trailing mean daily return times the horizon, same spread;
- the classical volatility models (`training.classical`: EWMA, GARCH-t, GJR-t, HAR), fitted per
  ticker on each fold's fit rows: the strongest simple baselines, and the yardstick a network
  must beat to earn its place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.classical import CLASSICAL, VARIANCE_FLOOR, VolatilityForecast, fit_forecast
from training.data import Panel, Scale, WindowSet, static_scale
from training.metrics import QUANTILE_COLUMNS

Z = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])
NAIVE = ("random_walk", "historical_drift")
BASELINES = (*NAIVE, *CLASSICAL)


def _quantiles(center: np.ndarray, sigma: np.ndarray, horizons: tuple[int, ...]) -> np.ndarray:
    h = np.asarray(horizons, float)
    spread = sigma[:, None] * np.sqrt(h)[None, :]
    return center[:, :, None] + spread[:, :, None] * Z[None, None, :]


def random_walk(ws: WindowSet, horizons: tuple[int, ...]) -> np.ndarray:
    """[n, horizons, 3] quantiles of a zero-drift random walk."""
    return _quantiles(np.zeros((len(ws), len(horizons))), ws.sigma.astype(float), horizons)


def historical_drift(ws: WindowSet, panel: Panel) -> np.ndarray:
    """[n, horizons, 3] quantiles centred on the trailing drift (known at each window's date)."""
    drift = np.empty(len(ws))
    for ticker in np.unique(ws.tickers):
        mask = ws.tickers == ticker
        series = panel.series[ticker].drift
        drift[mask] = series.reindex(pd.DatetimeIndex(ws.dates[mask])).to_numpy()
    drift = np.nan_to_num(drift)
    center = drift[:, None] * np.asarray(panel.horizons, float)[None, :]
    return _quantiles(center, ws.sigma.astype(float), panel.horizons)


def daily_returns(panel: Panel, ticker: str) -> pd.Series:
    """A ticker's daily log returns r(t) = log C(t) − log C(t−1): the 1-day target of the day
    before, so the series at t holds only what was known at t's close."""
    return panel.series[ticker].targets[f"h{panel.horizons[0]}"].shift(1).dropna()


class ClassicalFits:
    """Classical models fitted per (model, ticker, fit end), each once: a fold's validation and
    test rows share the fits."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self._fits: dict[tuple[str, str, pd.Timestamp], VolatilityForecast | None] = {}

    def fitted(self, name: str, ticker: str, fit_end: pd.Timestamp) -> VolatilityForecast | None:
        key = (name, ticker, fit_end)
        if key not in self._fits:
            try:
                returns = daily_returns(self.panel, ticker)
                self._fits[key] = fit_forecast(name, returns, fit_end, self.panel.horizons)
            except ValueError:  # too little history before fit_end (a young ETF): no forecast
                self._fits[key] = None
        return self._fits[key]

    def quantiles(self, name: str, ws: WindowSet, fit_end: pd.Timestamp) -> np.ndarray:
        """[n, horizons, 3]; NaN for rows of tickers the model could not be fitted on."""
        out = np.full((len(ws), len(self.panel.horizons), 3), np.nan)
        for ticker in np.unique(ws.tickers):
            mask = ws.tickers == ticker
            found = self.fitted(name, str(ticker), fit_end)
            if found is not None:
                origins = pd.DatetimeIndex(ws.dates[mask])
                out[mask] = found.quantiles(origins, self.panel.horizons)
        return out


def classical_scale(fits: ClassicalFits, model: str, fit_end: pd.Timestamp) -> Scale:
    """A network's per-horizon scale: `model`'s h-day volatility forecast, fitted on returns up
    to `fit_end` (a ticker it cannot be fitted on keeps the trailing σ × √h)."""
    horizons = fits.panel.horizons

    def scale(ticker: str, dates: pd.DatetimeIndex) -> np.ndarray:
        found = fits.fitted(model, ticker, fit_end)
        if found is None:
            sigma = fits.panel.series[ticker].sigma.reindex(dates).to_numpy(np.float32)
            return static_scale(sigma, horizons)
        variance = found.variance.reindex(dates)[list(horizons)].to_numpy(float)
        return np.sqrt(np.maximum(variance, VARIANCE_FLOOR))

    return scale


def baseline(
    name: str,
    ws: WindowSet,
    panel: Panel,
    fit_end: pd.Timestamp | None = None,
    fits: ClassicalFits | None = None,
) -> np.ndarray:
    """[n, horizons, 3] quantiles of baseline `name` on the windows of `ws` (classical models
    are fitted on rows up to `fit_end`)."""
    if name == "random_walk":
        return random_walk(ws, panel.horizons)
    if name == "historical_drift":
        return historical_drift(ws, panel)
    if name in CLASSICAL:
        if fit_end is None:
            raise ValueError(f"{name} needs the fold's fit end")
        return (fits or ClassicalFits(panel)).quantiles(name, ws, fit_end)
    raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")


def to_frame(ws: WindowSet, quantiles: np.ndarray, horizons: tuple[int, ...]) -> pd.DataFrame:
    """[n, horizons, 3] predictions + realised targets -> the long frame metrics take (rows
    without all three quantiles left out). Built in one go from numpy: on a served request's
    few rows, column-by-column pandas cost more than the network's forward pass."""
    n, k = len(ws), len(horizons)
    q = quantiles.reshape(n * k, len(QUANTILE_COLUMNS))
    keep = ~np.isnan(q).any(axis=1)
    columns = {
        "date": np.repeat(ws.dates, k),
        "ticker": np.repeat(ws.tickers, k),
        "horizon": np.tile(np.asarray(horizons), n),
        "y": ws.y.reshape(-1).astype(float),
        **{column: q[:, i] for i, column in enumerate(QUANTILE_COLUMNS)},
    }
    return pd.DataFrame({name: values[keep] for name, values in columns.items()})
