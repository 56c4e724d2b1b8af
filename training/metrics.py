"""Forecast evaluation: probabilistic accuracy, direction, ranking and a cost-aware backtest.

Every function takes a long prediction frame with columns
`date, ticker, horizon, q10, q50, q90, y` (y = realised log return over the horizon), so models
and baselines are scored by exactly the same code.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from features.stats import (  # shared with the API's A/B report
    christoffersen,
    diebold_mariano,
    kupiec,
    newey_west_variance,
)

QUANTILES = (0.1, 0.5, 0.9)
QUANTILE_COLUMNS = ("q10", "q50", "q90")
TRADING_DAYS = 252


def pinball_loss(y: np.ndarray, q: np.ndarray, tau: float) -> float:
    """Mean quantile (pinball) loss of predictions `q` for quantile level `tau`."""
    diff = np.asarray(y, float) - np.asarray(q, float)
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def row_pinball(frame: pd.DataFrame) -> np.ndarray:
    """Per-row pinball loss averaged over the three quantile levels."""
    y = frame["y"].to_numpy(float)
    losses = []
    for column, tau in zip(QUANTILE_COLUMNS, QUANTILES, strict=True):
        diff = y - frame[column].to_numpy(float)
        losses.append(np.maximum(tau * diff, (tau - 1) * diff))
    return np.mean(losses, axis=0)


def mean_pinball(frame: pd.DataFrame) -> float:
    """Pinball loss averaged over the three quantile levels and all rows."""
    return float(row_pinball(frame).mean())


def non_overlapping(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Every `horizon`-th date (of the frame's sorted dates), so h-day outcomes do not overlap;
    frames without dates, and horizon 1, come back whole."""
    if horizon <= 1 or "date" not in frame:
        return frame
    kept = np.sort(frame["date"].unique())[::horizon]
    return frame[frame["date"].isin(kept)]


@dataclass(frozen=True)
class Direction:
    hit_rate: float
    base_rate: float  # share of up moves among the rows scored
    p_value: float  # one-sided, against always calling the more frequent direction
    n: int


def directional(frame: pd.DataFrame, horizon: int = 1) -> Direction:
    """Hit rate of sign(q50) against sign(y), tested against the best constant call.

    "Always up" is right as often as the market rises (the base rate), so a model must beat
    max(base rate, 1 − base rate), not 0.5. Outcomes are thinned to non-overlapping dates first
    (h-day returns of neighbouring days share h − 1 days). Rows where either sign is zero or
    missing are skipped."""
    part = non_overlapping(frame, horizon)
    pred, real = np.sign(part["q50"].to_numpy(float)), np.sign(part["y"].to_numpy(float))
    mask = (pred != 0) & (real != 0) & np.isfinite(pred) & np.isfinite(real)
    n = int(mask.sum())
    if n == 0:
        return Direction(float("nan"), float("nan"), 1.0, 0)
    hits = int((pred[mask] == real[mask]).sum())
    base = float((real[mask] > 0).mean())
    null = max(base, 1 - base)
    p_value = 1.0 if null >= 1 else stats.binomtest(hits, n, null, alternative="greater").pvalue
    return Direction(hits / n, base, float(p_value), n)


def rank_ic(
    frame: pd.DataFrame,
    min_names: int = 3,
    horizon: int = 1,
    names: Collection[str] | None = None,
) -> tuple[float, float, int]:
    """Spearman correlation of q50 and y across tickers, per date: (mean, t-stat, dates used).

    Only `names` count when given (single stocks: an index or a factor ETF is no stock to pick).
    Neighbouring dates' h-day outcomes overlap, so the t-stat's variance is Newey-West with
    h − 1 lags (the plain standard error at h = 1)."""
    if names is not None:
        frame = frame[frame["ticker"].isin(list(names))]
    # Spearman per date = Pearson of the (average, tie-aware) ranks, all dates at once
    ranks = frame[["q50", "y"]].groupby(frame["date"]).rank(method="average")
    ranks["qy"] = ranks["q50"] * ranks["y"]
    ranks["qq"], ranks["yy"] = ranks["q50"] ** 2, ranks["y"] ** 2
    day = ranks.groupby(frame["date"]).agg(["sum", "count"])
    n_names = day[("q50", "count")].to_numpy(float)
    sums = {c: day[(c, "sum")].to_numpy(float) for c in ("q50", "y", "qy", "qq", "yy")}
    covariance = sums["qy"] - sums["q50"] * sums["y"] / n_names
    spread_q = sums["qq"] - sums["q50"] ** 2 / n_names
    spread_y = sums["yy"] - sums["y"] ** 2 / n_names
    usable = (n_names >= min_names) & (spread_q > 1e-9) & (spread_y > 1e-9)  # not all tied
    ics = covariance[usable] / np.sqrt(spread_q[usable] * spread_y[usable])
    n = len(ics)
    if n < 2:
        return float("nan"), float("nan"), n
    variance = newey_west_variance(ics, max(0, horizon - 1)) * n / (n - 1)
    if variance > 0:
        t_stat = ics.mean() / np.sqrt(variance / n)
    else:  # identical ICs on every date: unbounded evidence in their direction (or none at 0)
        t_stat = float(np.sign(ics.mean())) * np.inf if ics.mean() != 0 else 0.0
    return float(ics.mean()), float(t_stat), n


def coverage(frame: pd.DataFrame) -> float:
    """Share of outcomes inside the [q10, q90] interval (80% nominal)."""
    inside = (frame["y"] >= frame["q10"]) & (frame["y"] <= frame["q90"])
    return float(inside.mean())


@dataclass(frozen=True)
class Tails:
    """Each tail of the 80 % band on its own: hit rates of y < q10 and y > q90 (10 % each,
    nominal), Kupiec's test of each rate and Christoffersen's test that hits do not cluster,
    on non-overlapping outcomes (every h-th day of each ticker)."""

    below: float
    above: float
    kupiec_below: float
    kupiec_above: float
    christoffersen_below: float
    christoffersen_above: float
    n: int


def tails(frame: pd.DataFrame, horizon: int = 1) -> Tails:
    part = frame.sort_values(["ticker", "date"]) if "ticker" in frame else frame
    if horizon > 1 and "ticker" in part:
        part = part[part.groupby("ticker").cumcount().to_numpy() % horizon == 0]
    below = (part["y"] < part["q10"]).to_numpy()
    above = (part["y"] > part["q90"]).to_numpy()
    n = len(part)
    if n == 0:
        nan = float("nan")
        return Tails(nan, nan, nan, nan, nan, nan, 0)
    groups = part["ticker"].to_numpy() if "ticker" in part else np.zeros(n)

    def sequences(hits: np.ndarray) -> list[np.ndarray]:
        return [hits[groups == g] for g in pd.unique(groups)]

    return Tails(
        below=float(below.mean()),
        above=float(above.mean()),
        kupiec_below=kupiec(int(below.sum()), n, 0.1)[1],
        kupiec_above=kupiec(int(above.sum()), n, 0.1)[1],
        christoffersen_below=christoffersen(sequences(below))[1],
        christoffersen_above=christoffersen(sequences(above))[1],
        n=n,
    )


@dataclass(frozen=True)
class Backtest:
    annual_return: float
    sharpe: float
    max_drawdown: float
    turnover: float
    periods: int


def _long_short(q50: np.ndarray, fraction: float) -> np.ndarray:
    """Weights for one day's forecasts (NaN: no forecast, weight 0): +0.5 spread over the top
    `fraction` of names, −0.5 over the bottom. A name tied with one outside its side is left
    out, since only an arbitrary order could choose between them; a day with either side empty
    takes no position (all-equal forecasts never trade)."""
    present = np.isfinite(q50)
    values = q50[present]
    k = max(1, int(len(values) * fraction))
    ordered = np.sort(values)
    low, high = ordered[k - 1], ordered[-k]
    short = q50 <= low if (values <= low).sum() <= k else q50 < low
    long = q50 >= high if (values >= high).sum() <= k else q50 > high
    weights = np.zeros(len(q50))
    if long.any() and short.any() and not (long & short).any():
        weights[long] = 0.5 / long.sum()
        weights[short] = -0.5 / short.sum()
    return weights


def backtest(
    frame: pd.DataFrame, horizon: int, cost_bps: float, fraction: float = 1 / 3, min_names: int = 3
) -> Backtest:
    """Long the top `fraction` by q50, short the bottom, equal weight, rebalanced every `horizon`
    days on non-overlapping dates; pays `cost_bps` per unit of turnover. Tied forecasts take no
    position, so a forecast that does not rank (the random walk) earns exactly nothing.
    """
    dates = np.sort(frame["date"].unique())[::horizon]
    chosen = frame[frame["date"].isin(dates)]
    forecasts = chosen.pivot_table(index="date", columns="ticker", values="q50", aggfunc="first")
    outcomes = chosen.pivot_table(index="date", columns="ticker", values="y", aggfunc="first")
    outcomes = outcomes.reindex_like(forecasts)
    q50, realised = forecasts.to_numpy(float), np.expm1(outcomes.to_numpy(float))
    held = np.zeros(q50.shape[1])
    returns, turnovers = [], []
    for row in range(len(q50)):  # one rebalance per non-overlapping date
        if np.isfinite(q50[row]).sum() < min_names:
            continue
        weights = _long_short(q50[row], fraction)
        turnover = float(np.abs(weights - held).sum())
        gross = float(np.nansum(weights * realised[row]))
        returns.append(gross - turnover * cost_bps / 10_000)
        turnovers.append(turnover)
        held = weights
    if len(returns) < 2:
        return Backtest(float("nan"), float("nan"), float("nan"), float("nan"), len(returns))
    r = np.asarray(returns)
    per_year = TRADING_DAYS / horizon
    equity = np.cumprod(1 + r)
    # the peak starts at the initial capital, so a loss in the first period counts
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    drawdown = 1 - equity / peak
    sd = r.std(ddof=1)
    return Backtest(
        annual_return=float(equity[-1] ** (per_year / len(r)) - 1),
        sharpe=float(r.mean() / sd * np.sqrt(per_year)) if sd > 0 else 0.0,
        max_drawdown=float(drawdown.max()),
        turnover=float(np.mean(turnovers)),
        periods=len(r),
    )


@dataclass(frozen=True)
class HorizonMetrics:
    """One model at one horizon. Skills are 1 − loss / the comparison's loss on the same rows;
    DM p-values are one-sided (the model loses less), HAC with `dm_bandwidth(h)` lags."""

    horizon: int
    n: int
    pinball: float
    skill_vs_rw: float
    mae_median: float
    directional_accuracy: float
    directional_pvalue: float  # against the base rate of up moves, not 0.5
    rank_ic: float
    rank_ic_tstat: float
    coverage_80: float
    dm_stat_vs_rw: float
    dm_pvalue_vs_rw: float
    backtest: Backtest
    base_rate_up: float = float("nan")
    coverage_below: float = float("nan")  # y < q10: 0.10 nominal
    coverage_above: float = float("nan")  # y > q90: 0.10 nominal
    kupiec_p_below: float = float("nan")
    kupiec_p_above: float = float("nan")
    christoffersen_p_below: float = float("nan")
    christoffersen_p_above: float = float("nan")
    reference: str | None = None  # the strongest classical baseline, picked on validation
    skill_vs_reference: float = float("nan")
    dm_stat_vs_reference: float = float("nan")
    dm_pvalue_vs_reference: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(m: HorizonMetrics, alpha: float = 0.05) -> str:
    """A plain-words reading of the skill tests, for model cards and the API."""
    days = f"{m.horizon} day(s)"
    if np.isfinite(m.dm_pvalue_vs_rw) and m.dm_pvalue_vs_rw < alpha and m.skill_vs_rw > 0:
        said = f"beats the random walk at {days} (DM p={m.dm_pvalue_vs_rw:.3f})"
    elif np.isfinite(m.dm_stat_vs_rw) and stats.norm.sf(m.dm_stat_vs_rw) < alpha:
        said = f"worse than a random walk at {days} (DM p={stats.norm.sf(m.dm_stat_vs_rw):.3f})"
    else:
        said = f"no better than a random walk at {days}"
    if m.reference is None:
        return said
    if np.isfinite(m.dm_pvalue_vs_reference) and m.dm_pvalue_vs_reference < alpha:
        return f"{said}; beats {m.reference} (DM p={m.dm_pvalue_vs_reference:.3f})"
    return f"{said}; no better than {m.reference}"


KEYS = ["date", "ticker", "horizon"]


def versus(part: pd.DataFrame, other: pd.DataFrame, horizon: int) -> tuple[float, float, float]:
    """(skill, DM statistic, one-sided DM p) of `part` against `other` on the rows both have."""
    joined = part.merge(other[KEYS + list(QUANTILE_COLUMNS)], on=KEYS, suffixes=("", "_o"))
    if joined.empty:
        nan = float("nan")
        return nan, nan, nan
    theirs = joined[[*KEYS, "y"]].assign(**{c: joined[f"{c}_o"] for c in QUANTILE_COLUMNS})
    mine, them = row_pinball(joined), row_pinball(theirs)
    dates = pd.DatetimeIndex(joined["date"])
    statistic, p_value = diebold_mariano(
        pd.Series(mine, index=dates), pd.Series(them, index=dates), horizon, alternative="less"
    )
    skill = 1 - mine.mean() / them.mean() if them.mean() > 0 else float("nan")
    return float(skill), statistic, p_value


def evaluate(
    frame: pd.DataFrame,
    random_walk: pd.DataFrame,
    cost_bps: float,
    reference: tuple[str, pd.DataFrame] | None = None,
    names: Collection[str] | None = None,
) -> list[HorizonMetrics]:
    """Score predictions per horizon against the random walk (and `reference`, the strongest
    classical baseline, when given) on the same (date, ticker) rows. `names`: the single stocks
    rank IC ranks."""
    out = []
    for horizon, part in frame.groupby("horizon", sort=True):
        h = int(horizon)
        skill, dm, dm_p = versus(part, random_walk[random_walk["horizon"] == h], h)
        direction = directional(part, h)
        ic, ic_t, _ = rank_ic(part, horizon=h, names=names)
        tail = tails(part, h)
        if reference is not None:
            ref_name, ref_frame = reference
            ref = versus(part, ref_frame[ref_frame["horizon"] == h], h)
        else:
            ref_name, ref = None, (float("nan"),) * 3
        out.append(
            HorizonMetrics(
                horizon=h,
                n=len(part),
                pinball=mean_pinball(part),
                skill_vs_rw=skill,
                mae_median=float(np.mean(np.abs(part["y"] - part["q50"]))),
                directional_accuracy=direction.hit_rate,
                directional_pvalue=direction.p_value,
                rank_ic=ic,
                rank_ic_tstat=ic_t,
                coverage_80=coverage(part),
                dm_stat_vs_rw=dm,
                dm_pvalue_vs_rw=dm_p,
                backtest=backtest(part, h, cost_bps),
                base_rate_up=direction.base_rate,
                coverage_below=tail.below,
                coverage_above=tail.above,
                kupiec_p_below=tail.kupiec_below,
                kupiec_p_above=tail.kupiec_above,
                christoffersen_p_below=tail.christoffersen_below,
                christoffersen_p_above=tail.christoffersen_above,
                reference=ref_name,
                skill_vs_reference=ref[0],
                dm_stat_vs_reference=ref[1],
                dm_pvalue_vs_reference=ref[2],
            )
        )
    return out
