"""Probation of a newly aliased model version, and the evidence that rolls it back.

A version that takes over an alias from another is on probation in every replica serving it:

- **errors and latency**: its first `probation_requests` forecast calls are recorded; once
  `min_requests` have been seen, an error share above `max_error_rate` or a p95 latency above
  `latency_slo_ms` is a breach. A call that fails on probation is answered by the version it
  replaced, so users keep getting forecasts while the rollback happens.
- **live loss** (champion only): for `live_window_s` after the move, the previous champion is
  scored silently ("shadow") on the same live requests. Once outcomes arrive, a
  Diebold-Mariano test per horizon on the paired losses — Bonferroni-corrected over the
  horizons — that says the new champion loses significantly is a breach.
- **the challenger's live A/B** (for as long as it holds the alias): the same test on the live
  outcomes of the forecasts each variant served; a challenger that loses significantly at some
  horizon is demoted (its alias removed), so it stops taking traffic.

Both live tests act only on `MIN_GUARD_DATES` compared dates or more: live A/B data is short,
and on a few dozen dates a long-bandwidth DM test calls equal variants different several times
as often as its level says.

The decision functions here are pure; `serving.alias_watch.AliasWatch` wires them to the
registry, the alias history and the notification stream.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from api.db.ab import ResolvedLoss
from api.services.outcomes import MIN_VERDICT_DATES, AbReport, ab_report
from api.settings import Settings
from contracts import CHALLENGER, CHAMPION, HORIZONS


def _default(setting: str) -> object:
    """A rollback setting's default: the settings hold the only copy of each number."""
    return Settings.model_fields[f"rollback_{setting}"].default


@dataclass(frozen=True)
class RollbackPolicy:
    max_error_rate: float = _default("error_rate")  # type: ignore[assignment]
    latency_slo_ms: float = _default("latency_slo_ms")  # type: ignore[assignment]
    min_requests: int = _default("min_requests")  # type: ignore[assignment]
    probation_requests: int = _default("probation_requests")  # type: ignore[assignment]
    live_window_s: float = _default("live_window_s")  # type: ignore[assignment]
    live_alpha: float = _default("live_alpha")  # type: ignore[assignment]

    @classmethod
    def from_settings(cls, settings: Settings) -> RollbackPolicy:
        return cls(
            max_error_rate=settings.rollback_error_rate,
            latency_slo_ms=settings.rollback_latency_slo_ms,
            min_requests=settings.rollback_min_requests,
            probation_requests=settings.rollback_probation_requests,
            live_window_s=settings.rollback_live_window_s,
            live_alpha=settings.rollback_live_alpha,
        )


@dataclass
class Probation:
    """One alias's newly served version (`candidate`) and the one it replaced (`fallback`)."""

    alias: str
    candidate: str
    fallback: str | None
    started_at: datetime
    policy: RollbackPolicy = field(default_factory=RollbackPolicy)
    ended: bool = False
    verdict: str | None = None  # why the candidate failed probation; set once
    seen: int = 0
    _calls: deque[tuple[bool, float]] = field(init=False)

    def __post_init__(self) -> None:
        self._calls = deque(maxlen=self.policy.probation_requests)

    @property
    def watching(self) -> bool:
        """Still recording calls (not ended, and fewer than `probation_requests` seen)."""
        return not self.ended and self.seen < self.policy.probation_requests

    def record(self, ok: bool, latency_s: float) -> None:
        self.seen += 1
        self._calls.append((ok, latency_s))

    def fail(self, reason: str) -> None:
        self.ended, self.verdict = True, reason

    def breach(self) -> str | None:
        """Why the candidate must go, judged on the calls seen so far; None while it holds."""
        n = len(self._calls)
        if n < self.policy.min_requests:
            return None
        failed = sum(1 for ok, _ in self._calls if not ok)
        if failed / n > self.policy.max_error_rate:
            return (
                f"version {self.candidate} failed {failed} of its first {n} requests "
                f"(limit {self.policy.max_error_rate:.0%})"
            )
        answered = [latency for ok, latency in self._calls if ok]
        if answered:
            p95_ms = 1000 * float(np.percentile(answered, 95))
            if p95_ms > self.policy.latency_slo_ms:
                return (
                    f"version {self.candidate} p95 latency {p95_ms:.0f} ms over {len(answered)} "
                    f"requests breaches the {self.policy.latency_slo_ms:.0f} ms SLO"
                )
        return None

    def shadowing(self, now: datetime | None = None) -> bool:
        """Whether the previous champion should still be scored beside the candidate."""
        now = now or datetime.now(UTC)
        return (
            not self.ended
            and self.alias == CHAMPION
            and self.fallback is not None
            and (now - self.started_at).total_seconds() < self.policy.live_window_s
        )


MIN_GUARD_DATES = MIN_VERDICT_DATES  # below this the DM test's size is far above its level


def significantly_worse(report: AbReport, alpha: float) -> bool:
    """Whether the challenger side of `report` loses significantly: DM > 0 at `alpha` over the
    horizons (Bonferroni), on at least MIN_GUARD_DATES compared dates. With a 20-lag HAC
    variance the test over-rejects badly on fewer dates (`benchmarks/guard_size.py` measures
    how often equal variants would be told apart), and an automatic rollback must not be a
    coin toss."""
    level = alpha / len(HORIZONS)
    return (
        report.n_dates >= MIN_GUARD_DATES
        and math.isfinite(report.p_value)
        and report.p_value < level
        and report.dm_stat > 0
    )


def _loses(report: AbReport, loser: str, winner: str, alpha: float) -> str:
    return (
        f"{loser} loses to {winner} on live outcomes at h={report.horizon}: mean pinball "
        f"{report.mean_loss_challenger:.5f} vs {report.mean_loss_champion:.5f} over "
        f"{report.n_pairs} forecasts on {report.n_dates} dates ({report.method}), "
        f"DM {report.dm_stat:.2f}, p={report.p_value:.2g} < {alpha / len(HORIZONS):.2g}"
    )


def live_verdict(
    rows: Iterable[ResolvedLoss],
    candidate: str,
    incumbent: str,
    alpha: float = _default("live_alpha"),  # type: ignore[assignment]
) -> str | None:
    """A reason to roll `candidate` back if its live losses are significantly worse than the
    `incumbent`'s at any horizon (`significantly_worse`); else None."""
    as_variants = {candidate: CHALLENGER, incumbent: CHAMPION}
    relabelled = [
        replace(r, variant=as_variants[r.version]) for r in rows if r.version in as_variants
    ]
    for horizon in HORIZONS:
        report = ab_report(relabelled, horizon)
        if significantly_worse(report, alpha):
            return _loses(report, f"version {candidate}", f"version {incumbent}", alpha)
    return None


def challenger_verdict(
    reports: Iterable[AbReport],
    alpha: float = _default("live_alpha"),  # type: ignore[assignment]
) -> str | None:
    """A reason to demote the challenger if its live losses are significantly worse than the
    champion's at any horizon of `reports` (`significantly_worse`); else None."""
    for report in reports:
        if significantly_worse(report, alpha):
            challenger = ",".join(report.versions.get(CHALLENGER, [])) or "?"
            champion = ",".join(report.versions.get(CHAMPION, [])) or "?"
            return _loses(
                report, f"challenger version {challenger}", f"champion version {champion}", alpha
            )
    return None
