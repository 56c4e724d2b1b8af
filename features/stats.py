"""Statistical tests shared by offline evaluation (`training`) and online A/B reports (`api`).

They live here because `api` may import only `features`; `training.metrics` re-exports them, so
walk-forward skill and live A/B verdicts are decided by the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import xlogy

MIN_BANDWIDTH = 20  # lags of loss differentials between volatility forecasts stay correlated


def newey_west_variance(series: np.ndarray, bandwidth: int) -> float:
    """Long-run variance of `series` (Bartlett weights, `bandwidth` lags), population scale."""
    n = len(series)
    centred = series - series.mean()
    variance = centred @ centred / n
    for lag in range(1, min(bandwidth, n - 1) + 1):
        weight = 1 - lag / (bandwidth + 1)
        variance += 2 * weight * (centred[lag:] @ centred[:-lag]) / n
    return float(variance)


def dm_bandwidth(horizon: int) -> int:
    """The HAC bandwidth for h-day loss differentials: overlapping outcomes need h - 1 lags,
    and volatility forecasts' losses stay autocorrelated for weeks, so never fewer than 20."""
    return max(MIN_BANDWIDTH, horizon - 1)


def diebold_mariano(
    loss_a: pd.Series,
    loss_b: pd.Series,
    horizon: int,
    *,
    bandwidth: int | None = None,
    alternative: str = "two-sided",
    small_sample: bool = False,
) -> tuple[float, float]:
    """Diebold-Mariano test of equal expected loss for date-indexed loss series.

    Losses are averaged per date first (tickers on one date are not independent); the variance of
    the mean difference is Newey-West with `bandwidth` lags (default `dm_bandwidth(horizon)`).
    Returns (statistic, p-value); a negative statistic means `a` loses less. `alternative`
    "less" tests that `a` loses less (one-sided), "two-sided" that the losses differ.
    `small_sample` applies Harvey, Leybourne & Newbold's (1997) correction — the statistic
    scaled by sqrt((n + 1 - 2h + h(h-1)/n) / n), against Student's t with n - 1 degrees of
    freedom — for short samples such as live A/B tests.
    """
    d = (loss_a - loss_b).groupby(level=0).mean().to_numpy(float)
    n = len(d)
    if n < 10:
        return float("nan"), float("nan")
    if not np.any(d):  # the same losses on every date: no evidence either way
        return 0.0, 1.0
    variance = newey_west_variance(d, dm_bandwidth(horizon) if bandwidth is None else bandwidth)
    if variance <= 0:
        return float("nan"), float("nan")
    statistic = float(d.mean() / np.sqrt(variance / n))
    reference: Any = stats.norm
    if small_sample:
        statistic *= math.sqrt(max(n + 1 - 2 * horizon + horizon * (horizon - 1) / n, 1.0) / n)
        reference = stats.t(n - 1)
    if alternative == "less":
        return statistic, float(reference.cdf(statistic))
    if alternative != "two-sided":
        raise ValueError(f"alternative must be 'less' or 'two-sided', not {alternative!r}")
    return statistic, float(2 * reference.sf(abs(statistic)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error), in the input's order; NaN stays
    NaN and does not count towards the family."""
    values = np.asarray(p_values, float)
    finite = np.flatnonzero(np.isfinite(values))
    adjusted = np.full(len(values), np.nan)
    m = len(finite)
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(values[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def kupiec(hits: int, n: int, rate: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures test: (LR statistic, p-value) that `hits` of `n`
    independent trials come from the nominal `rate` (chi-squared, one degree of freedom)."""
    if n == 0:
        return float("nan"), float("nan")
    observed = hits / n
    log_null = xlogy(n - hits, 1 - rate) + xlogy(hits, rate)
    log_alt = xlogy(n - hits, 1 - observed) + xlogy(hits, observed)
    statistic = float(max(0.0, -2 * (log_null - log_alt)))
    return statistic, float(stats.chi2.sf(statistic, 1))


def christoffersen(sequences: Iterable[Sequence[bool]]) -> tuple[float, float]:
    """Christoffersen's independence test: (LR statistic, p-value) that a hit today does not make
    one tomorrow more or less likely (first-order Markov, chi-squared with one degree of freedom).
    Transitions are pooled over the sequences given (one per ticker, say), never across them."""
    n00 = n01 = n10 = n11 = 0
    for sequence in sequences:
        h = np.asarray(sequence, bool)
        before, after = h[:-1], h[1:]
        n00 += int((~before & ~after).sum())
        n01 += int((~before & after).sum())
        n10 += int((before & ~after).sum())
        n11 += int((before & after).sum())
    if n00 + n01 + n10 + n11 == 0:
        return float("nan"), float("nan")
    if n01 + n11 == 0 or n00 + n10 == 0:  # never or always a hit: nothing to be dependent on
        return 0.0, 1.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    log_null = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    log_alt = xlogy(n00, 1 - pi0) + xlogy(n01, pi0) + xlogy(n10, 1 - pi1) + xlogy(n11, pi1)
    statistic = float(max(0.0, -2 * (log_null - log_alt)))
    return statistic, float(stats.chi2.sf(statistic, 1))
