"""Statistical tests shared by offline evaluation (`training`) and online A/B reports (`api`).

They live here because `api` may import only `features`; `training.metrics` re-exports them, so
walk-forward skill and live A/B verdicts are decided by the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def diebold_mariano(loss_a: pd.Series, loss_b: pd.Series, horizon: int) -> tuple[float, float]:
    """Diebold-Mariano test of equal expected loss for date-indexed loss series.

    Losses are averaged per date first (tickers on one date are not independent); the variance of
    the mean difference uses Newey-West weights with `horizon - 1` lags because h-day outcomes
    overlap. Returns (statistic, two-sided p-value); a negative statistic means `a` loses less.
    """
    d = (loss_a - loss_b).groupby(level=0).mean().to_numpy(float)
    n = len(d)
    if n < 10:
        return float("nan"), float("nan")
    centred = d - d.mean()
    variance = centred @ centred / n
    for lag in range(1, min(horizon, n - 1)):
        weight = 1 - lag / horizon
        variance += 2 * weight * (centred[lag:] @ centred[:-lag]) / n
    if variance <= 0:
        return float("nan"), float("nan")
    statistic = d.mean() / np.sqrt(variance / n)
    return float(statistic), float(2 * stats.norm.sf(abs(statistic)))
