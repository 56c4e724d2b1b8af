"""Naive baselines every model must beat, scored by the same evaluation code.

- random walk: zero drift, quantiles from the trailing volatility (Gaussian z-scores);
- historical drift: the trailing mean daily return times the horizon, same spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data import Panel, WindowSet
from training.metrics import QUANTILE_COLUMNS

Z = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])
BASELINES = ("random_walk", "historical_drift")


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


def baseline(name: str, ws: WindowSet, panel: Panel) -> np.ndarray:
    if name == "random_walk":
        return random_walk(ws, panel.horizons)
    if name == "historical_drift":
        return historical_drift(ws, panel)
    raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")


def to_frame(ws: WindowSet, quantiles: np.ndarray, horizons: tuple[int, ...]) -> pd.DataFrame:
    """[n, horizons, 3] predictions + realised targets -> the long frame metrics take."""
    n, k = len(ws), len(horizons)
    frame = pd.DataFrame(
        {
            "date": np.repeat(ws.dates, k),
            "ticker": np.repeat(ws.tickers, k),
            "horizon": np.tile(np.asarray(horizons), n),
            "y": ws.y.reshape(-1).astype(float),
        }
    )
    for i, column in enumerate(QUANTILE_COLUMNS):
        frame[column] = quantiles[:, :, i].reshape(-1)
    return frame
