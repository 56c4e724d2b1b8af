"""How often would the live guards act on chance, and how soon do they catch a bad challenger?

Simulates live A/B tests through the real decision code (`api.services.outcomes.ab_report` and
`serving.guard.challenger_verdict`): 20 tickers a day with h-day outcomes from Student-t daily
returns with persistent, ticker-specific volatility; either every ticker forecast by both
variants (`--design paired`, as the feed's daily forecasts do) or each ticker by one (`split`,
as sticky user traffic is). "equal" variants have bands of the same quality, so every demotion
is a false alarm; "3x wide" gives the challenger bands three times too wide. Printed side by
side per number of dates: the share of tests demoted by the raw DM rule (normal reference, no
minimum of dates) and by the rule the guards use (small-sample correction, MIN_GUARD_DATES).

    uv run python -m benchmarks.guard_size --runs 200 [--design split]
"""

from __future__ import annotations

import argparse
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd

from api.db.ab import ResolvedLoss
from api.services.outcomes import ab_report
from api.settings import Settings
from contracts import HORIZONS
from features.stats import diebold_mariano
from serving.guard import MIN_GUARD_DATES, challenger_verdict

TICKERS = 20


def _pinball(y: np.ndarray, q: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    total = np.zeros_like(y)
    for tau, quantile in zip((0.1, 0.5, 0.9), q, strict=True):
        diff = y - quantile
        total += np.maximum(tau * diff, (tau - 1) * diff)
    return total / 3


def _rows(n_dates: int, wide: float, paired: bool, rng: np.random.Generator) -> list[ResolvedLoss]:
    """Resolved live forecasts of both variants over `n_dates` sessions: every ticker by both
    (`paired`, as the feed forecasts) or each ticker by one (as sticky user traffic is split).
    Each forecast's band is the true scale times its own lognormal error, the same for both
    variants in distribution, times `wide` for the challenger."""
    days = n_dates + max(HORIZONS)
    sigma = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, (days, TICKERS)), axis=0) * 0.2)
    returns = sigma * rng.standard_t(5, (days, TICKERS)) / math.sqrt(5 / 3)
    cumulative = np.vstack([np.zeros(TICKERS), np.cumsum(returns, axis=0)])
    start = date(2024, 1, 2)
    rows = []
    for h in HORIZONS:
        y = cumulative[h : h + n_dates] - cumulative[:n_dates]  # [dates, tickers]
        scale = sigma[:n_dates] * math.sqrt(h) * 1.2816
        for t in range(TICKERS):
            variants = (
                ("champion", "challenger") if paired else (("champion", "challenger")[t % 2],)
            )
            for variant in variants:
                error = np.exp(rng.normal(0, 0.2, n_dates))
                width = scale[:, t] * error * (wide if variant == "challenger" else 1.0)
                loss = _pinball(y[:, t], (-width, np.zeros(n_dates), width))
                rows += [
                    ResolvedLoss(
                        start + timedelta(days=i), f"T{t}", h, variant, variant[:2], loss[i]
                    )
                    for i in range(n_dates)
                ]
    return rows


def _raw_rule(rows: list[ResolvedLoss], alpha: float) -> bool:
    """DM with a normal reference and no minimum of dates, on the same per-date means that
    `ab_report` compares: the rule before the small-sample correction and MIN_GUARD_DATES."""
    frame = pd.DataFrame(rows)
    for h in HORIZONS:
        means = frame[frame["horizon"] == h].groupby(["variant", "as_of"])["loss"].mean()
        a, b = means["challenger"], means["champion"]
        shared = a.index.intersection(b.index)
        index = pd.DatetimeIndex(shared)
        stat, p = diebold_mariano(
            pd.Series(a.loc[shared].to_numpy(), index),
            pd.Series(b.loc[shared].to_numpy(), index),
            h,
        )
        if math.isfinite(p) and p < alpha / len(HORIZONS) and stat > 0:
            return True
    return False


def _guard_rule(rows: list[ResolvedLoss], alpha: float) -> bool:
    return challenger_verdict([ab_report(rows, h) for h in HORIZONS], alpha) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dates", type=int, nargs="+", default=[40, 80, 120, 200])
    parser.add_argument("--design", choices=["paired", "split"], default="paired")
    parser.add_argument(
        "--alpha",
        type=float,
        default=Settings.model_fields["rollback_live_alpha"].default,
        help="the guards' family-wise level (default: ROLLBACK_LIVE_ALPHA's default)",
    )
    args = parser.parse_args()
    alpha = args.alpha
    rng = np.random.default_rng(20261201)
    paired = args.design == "paired"
    print(
        f"{args.design} design; level {alpha:.0%} over {len(HORIZONS)} horizons, one-sided "
        f"(so {alpha / 2:.1%} of equal tests may be demoted); MIN_GUARD_DATES = "
        f"{MIN_GUARD_DATES}; {args.runs} simulated tests per cell"
    )
    header = ("dates", "equal: raw", "equal: guard", "3x wide: raw", "3x wide: guard")
    print(" | ".join(f"{h:>14}" for h in header))
    for n in args.dates:
        cells = []
        for wide in (1.0, 3.0):
            raw = guard = 0
            for _ in range(args.runs):
                rows = _rows(n, wide, paired, rng)
                raw += _raw_rule(rows, alpha)
                guard += _guard_rule(rows, alpha)
            cells += [raw / args.runs, guard / args.runs]
        print(" | ".join([f"{n:>14}", *(f"{c:>14.1%}" for c in cells)]))


if __name__ == "__main__":
    main()
