"""Live A/B verdicts: do the challenger's realised losses beat the champion's?

Losses come from `prediction_outcomes` (pinball loss of each served forecast once its horizon
has passed). The comparison uses the same Diebold-Mariano test as walk-forward evaluation
(`features.stats.diebold_mariano`): per-date mean loss differences with Newey-West variance, since
h-day outcomes on neighbouring dates overlap, with Harvey-Leybourne-Newbold's small-sample
correction, because a live test has months of dates, not decades. Automatic demotions and
rollbacks also wait for `serving.guard.MIN_GUARD_DATES` dates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from api.db.ab import AbWeightRepository, Db, PredictionLogRepository, ResolvedLoss
from api.services.ab import CHALLENGER, CHAMPION
from contracts import HORIZONS
from features.stats import diebold_mariano

ALPHA = 0.05
MIN_DATES = 10  # diebold_mariano gives no verdict on fewer dates
# No recommendation, and no automatic demotion or rollback, on fewer compared dates: on shorter
# samples the long-bandwidth DM test calls equal models different several times as often as
# its level says (benchmarks/guard_size.py), worst at h=20, where 10 dates of overlapping
# 20-day outcomes hold half an independent observation.
MIN_VERDICT_DATES = 120
Key = tuple[date, str, int]


@dataclass(frozen=True)
class AbReport:
    """The champion/challenger comparison at one horizon and what to do about it.

    `method` is "paired" when both variants forecast the same (as_of, ticker, horizon) often
    enough to test on those pairs alone, else "per-date means" (each variant's mean loss on the
    dates both have outcomes). `n_pairs` counts the paired forecasts or the shared dates; the
    mean losses are over that same compared sample, so they are NaN when nothing is shared.
    `forecasts` and `dates` count each variant's own resolved forecasts at the horizon (one per
    (as_of, ticker)) and the dates they span, compared or not.
    """

    horizon: int
    method: str
    n_pairs: int
    n_dates: int
    mean_loss_champion: float
    mean_loss_challenger: float
    dm_stat: float
    p_value: float
    recommendation: str
    versions: dict[str, list[str]] = field(default_factory=dict)
    forecasts: dict[str, int] = field(default_factory=dict)
    dates: dict[str, int] = field(default_factory=dict)


def _recommend(statistic: float, p_value: float, n: int, dates: int) -> str:
    """DM(challenger, champion) < 0 means the challenger loses less."""
    if dates < MIN_VERDICT_DATES:
        return f"too little evidence yet: {dates} of {MIN_VERDICT_DATES} dates (n={n})"
    if math.isfinite(p_value) and p_value < ALPHA:
        return "promote challenger" if statistic < 0 else "keep champion"
    return f"no significant difference (n={n})"


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def ab_report(rows: Iterable[ResolvedLoss], horizon: int) -> AbReport:
    """Compare the variants' realised losses at `horizon`; promote only on significant evidence.

    Forecasts both variants made for the same (as_of, ticker, horizon) are compared pair by
    pair, which removes the market's day-to-day noise from the difference. Sticky A/B routing
    means most tickers are asked of one variant only, so when pairs span fewer than MIN_DATES
    dates each variant's mean loss per date is compared on the dates both were used instead.
    """
    champion: dict[Key, float] = {}
    challenger: dict[Key, float] = {}
    versions: dict[str, set[str]] = {CHAMPION: set(), CHALLENGER: set()}
    for r in rows:
        if r.horizon != horizon or r.variant not in versions:
            continue
        versions[r.variant].add(r.version)
        # two versions of one variant on a key (an alias moved): the later row replaces it
        (champion if r.variant == CHAMPION else challenger)[(r.as_of, r.ticker, r.horizon)] = r.loss
    paired = sorted(champion.keys() & challenger.keys())
    if len({key[0] for key in paired}) >= MIN_DATES:
        method = "paired"
        index = pd.DatetimeIndex([key[0] for key in paired])
        loss_b = pd.Series([champion[k] for k in paired], index=index)
        loss_a = pd.Series([challenger[k] for k in paired], index=index)
        n_pairs = len(paired)
    else:
        method = "per-date means"
        means = [
            pd.Series(list(losses.values()), index=pd.DatetimeIndex([k[0] for k in losses]))
            .groupby(level=0)
            .mean()
            for losses in (challenger, champion)
        ]
        shared = means[0].index.intersection(means[1].index)
        loss_a, loss_b = means[0].loc[shared], means[1].loc[shared]
        n_pairs = len(shared)
    statistic, p_value = diebold_mariano(loss_a, loss_b, horizon, small_sample=True)
    n_dates = len(loss_a.index.unique())
    return AbReport(
        horizon=horizon,
        method=method,
        n_pairs=n_pairs,
        n_dates=n_dates,
        mean_loss_champion=_mean(loss_b),
        mean_loss_challenger=_mean(loss_a),
        dm_stat=statistic,
        p_value=p_value,
        recommendation=_recommend(statistic, p_value, n_pairs, n_dates),
        versions={variant: sorted(found) for variant, found in versions.items()},
        forecasts={CHAMPION: len(champion), CHALLENGER: len(challenger)},
        dates={
            variant: len({key[0] for key in losses})
            for variant, losses in ((CHAMPION, champion), (CHALLENGER, challenger))
        },
    )


@dataclass(frozen=True)
class LiveAb:
    """A family's live A/B state: forecasts resolved by this look, the challenger weight as
    stored, and the comparison at each horizon asked for."""

    family: str
    resolved: int
    challenger_weight: float
    reports: list[AbReport]


async def live_ab(
    db: Db,
    family: str,
    horizons: Sequence[int] = HORIZONS,
    versions: Mapping[str, str | None] | None = None,
) -> LiveAb:
    """Score the family's forecasts whose horizon has passed, then compare the variants' live
    losses at each horizon: what `stockcopilot ab report`, the models route and serving's
    challenger guard all read, so they cannot disagree.

    `versions` restricts a variant to one model version ({variant: version}); a variant mapped
    to None keeps none of its forecasts (no version holds that alias now); a variant left out
    keeps every version's.
    """
    versions = dict(versions or {})
    log = PredictionLogRepository(db)
    resolved = await log.resolve_due(family)
    weight = await AbWeightRepository(db).get(family)
    pinned = {variant: v for variant, v in versions.items() if v is not None}
    one_horizon = horizons[0] if len(horizons) == 1 else None
    rows = [
        r
        for r in await log.resolved_losses(family, one_horizon, pinned)
        if not (r.variant in versions and versions[r.variant] is None)
    ]
    return LiveAb(family, resolved, weight, [ab_report(rows, h) for h in horizons])
