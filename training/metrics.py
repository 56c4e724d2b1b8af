"""Forecast evaluation: probabilistic accuracy, direction, ranking and a cost-aware backtest.

Every function takes a long prediction frame with columns
`date, ticker, horizon, q10, q50, q90, y` (y = realised log return over the horizon), so models
and baselines are scored by exactly the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from features.stats import diebold_mariano  # shared with the API's A/B report

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


def directional(frame: pd.DataFrame) -> tuple[float, float, int]:
    """(hit rate of sign(q50) vs sign(y), one-sided binomial p-value vs 0.5, n).

    Rows where either sign is zero or missing are skipped."""
    pred, real = np.sign(frame["q50"].to_numpy(float)), np.sign(frame["y"].to_numpy(float))
    mask = (pred != 0) & (real != 0) & np.isfinite(pred) & np.isfinite(real)
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 1.0, 0
    hits = int((pred[mask] == real[mask]).sum())
    p_value = stats.binomtest(hits, n, 0.5, alternative="greater").pvalue
    return hits / n, float(p_value), n


def rank_ic(frame: pd.DataFrame, min_names: int = 3) -> tuple[float, float, int]:
    """Spearman correlation of q50 and y across tickers, per date: (mean, t-stat, dates used)."""
    per_date = []
    for _, day in frame.groupby("date"):
        if len(day) >= min_names and day["q50"].nunique() > 1 and day["y"].nunique() > 1:
            per_date.append(stats.spearmanr(day["q50"], day["y"]).statistic)
    ics = np.asarray(per_date, float)
    if len(ics) < 2:
        return float("nan"), float("nan"), len(ics)
    spread = ics.std(ddof=1)
    if spread > 0:
        t_stat = ics.mean() / (spread / np.sqrt(len(ics)))
    else:  # identical ICs on every date: unbounded evidence in their direction (or none at 0)
        t_stat = float(np.sign(ics.mean())) * np.inf if ics.mean() != 0 else 0.0
    return float(ics.mean()), float(t_stat), len(ics)


def coverage(frame: pd.DataFrame) -> float:
    """Share of outcomes inside the [q10, q90] interval (80% nominal)."""
    inside = (frame["y"] >= frame["q10"]) & (frame["y"] <= frame["q90"])
    return float(inside.mean())


@dataclass(frozen=True)
class Backtest:
    annual_return: float
    sharpe: float
    max_drawdown: float
    turnover: float
    periods: int


def backtest(
    frame: pd.DataFrame, horizon: int, cost_bps: float, fraction: float = 1 / 3, min_names: int = 3
) -> Backtest:
    """Long the top `fraction` by q50, short the bottom, equal weight, rebalanced every `horizon`
    days on non-overlapping dates; pays `cost_bps` per unit of turnover.
    """
    dates = np.sort(frame["date"].unique())[::horizon]
    weights_prev: pd.Series = pd.Series(dtype=float)
    returns, turnovers = [], []
    for date in dates:
        day = frame[frame["date"] == date]
        if len(day) < min_names:
            continue
        k = max(1, int(len(day) * fraction))
        ranked = day.sort_values("q50")
        weights = pd.Series(0.0, index=day["ticker"].to_numpy())
        weights[ranked["ticker"].iloc[-k:].to_numpy()] = 0.5 / k
        weights[ranked["ticker"].iloc[:k].to_numpy()] = -0.5 / k
        realised = np.expm1(day.set_index("ticker")["y"])  # simple return over the horizon
        aligned = weights_prev.reindex(weights.index.union(weights_prev.index), fill_value=0.0)
        turnover = float((weights.reindex(aligned.index, fill_value=0.0) - aligned).abs().sum())
        gross = float((weights * realised.reindex(weights.index)).sum())
        returns.append(gross - turnover * cost_bps / 10_000)
        turnovers.append(turnover)
        weights_prev = weights
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
    horizon: int
    n: int
    pinball: float
    skill_vs_rw: float
    mae_median: float
    directional_accuracy: float
    directional_pvalue: float
    rank_ic: float
    rank_ic_tstat: float
    coverage_80: float
    dm_stat_vs_rw: float
    dm_pvalue_vs_rw: float
    backtest: Backtest

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(m: HorizonMetrics, alpha: float = 0.05) -> str:
    """A plain-words reading of the skill test, for model cards and the API."""
    if not np.isfinite(m.dm_pvalue_vs_rw) or m.dm_pvalue_vs_rw >= alpha:
        return f"no better than a random walk at {m.horizon} day(s)"
    if m.skill_vs_rw > 0:
        return f"beats the random walk at {m.horizon} day(s) (DM p={m.dm_pvalue_vs_rw:.3f})"
    return f"worse than a random walk at {m.horizon} day(s) (DM p={m.dm_pvalue_vs_rw:.3f})"


def evaluate(
    frame: pd.DataFrame,
    random_walk: pd.DataFrame,
    cost_bps: float,
) -> list[HorizonMetrics]:
    """Score predictions per horizon against the random walk on the same (date, ticker) rows."""
    out = []
    for horizon, part in frame.groupby("horizon", sort=True):
        keys = ["date", "ticker", "horizon"]
        rw = random_walk[random_walk["horizon"] == horizon]
        joined = part.merge(rw[keys + list(QUANTILE_COLUMNS)], on=keys, suffixes=("", "_rw"))
        rw_frame = joined[[*keys, "y"]].assign(**{c: joined[f"{c}_rw"] for c in QUANTILE_COLUMNS})
        row_loss, row_loss_rw = row_pinball(joined), row_pinball(rw_frame)
        loss, loss_rw = float(row_loss.mean()), float(row_loss_rw.mean())
        dates = pd.DatetimeIndex(joined["date"])
        dm, dm_p = diebold_mariano(
            pd.Series(row_loss, index=dates), pd.Series(row_loss_rw, index=dates), int(horizon)
        )
        hit, p_value, _ = directional(part)
        ic, ic_t, _ = rank_ic(part)
        out.append(
            HorizonMetrics(
                horizon=int(horizon),
                n=len(part),
                pinball=mean_pinball(part),
                skill_vs_rw=1 - loss / loss_rw if loss_rw > 0 else float("nan"),
                mae_median=float(np.mean(np.abs(part["y"] - part["q50"]))),
                directional_accuracy=hit,
                directional_pvalue=p_value,
                rank_ic=ic,
                rank_ic_tstat=ic_t,
                coverage_80=coverage(part),
                dm_stat_vs_rw=dm,
                dm_pvalue_vs_rw=dm_p,
                backtest=backtest(part, int(horizon), cost_bps),
            )
        )
    return out
