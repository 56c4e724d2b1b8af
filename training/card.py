"""Model cards: what a model is, how it was evaluated and what the numbers say (md + JSON)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts import FAMILY_KINDS
from training.config import fingerprint
from training.metrics import HorizonMetrics, verdict


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def tail(rate: float, kupiec: float, christoffersen: float) -> str:
    """One tail of the 80 % band: its hit rate (0.10 nominal), with the p-values of Kupiec's
    test of that rate and Christoffersen's test that hits do not cluster."""
    return f"{rate:.3f} ({kupiec:.2f}, {christoffersen:.2f})"


DESCRIPTIONS = {
    "classical": "a GARCH-type model fitted per ticker, its own h-day variance forecast times "
    "its own standardised quantiles.",
    "network": "one global network across tickers (ticker and sector embeddings), predicting "
    "a correction to GARCH's h-day volatility, its tails calibrated on validation blocks.",
    "ensemble": "a weighted average of the members' quantiles, weights per horizon fitted on "
    "validation blocks, its tails calibrated on them.",
}


@dataclass
class ModelCard:
    family: str
    profile: str
    params: dict[str, Any]
    folds: list[dict[str, str]]
    metrics: dict[str, dict[str, list[HorizonMetrics]]]  # model/baseline -> "all"/"foldK" -> rows
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def headline(self) -> dict[str, float]:
        """Flat metrics for MLflow and `stockcopilot models`: h1.skill_vs_rw, ..."""
        flat: dict[str, float] = {}
        for m in self.metrics[self.family]["all"]:
            for key in (
                "pinball",
                "skill_vs_rw",
                "coverage_80",
                "directional_accuracy",
                "rank_ic",
                "dm_pvalue_vs_rw",
            ):
                flat[f"h{m.horizon}.{key}"] = float(getattr(m, key))
            flat[f"h{m.horizon}.sharpe"] = float(m.backtest.sharpe)
            if m.reference is not None:
                flat[f"h{m.horizon}.skill_vs_classical"] = float(m.skill_vs_reference)
                flat[f"h{m.horizon}.dm_pvalue_vs_classical"] = float(m.dm_pvalue_vs_reference)
        return flat

    def skill(self) -> dict[int, dict[str, Any]]:
        """Per horizon: skill vs the random walk and vs the strongest classical baseline, and
        the plain-words verdict (served by the API)."""
        return {
            m.horizon: {
                "skill_vs_rw": m.skill_vs_rw,
                "dm_pvalue": m.dm_pvalue_vs_rw,
                "coverage_80": m.coverage_80,
                "verdict": verdict(m),
                "reference": m.reference,
                "skill_vs_reference": _finite(m.skill_vs_reference),
                "dm_pvalue_vs_reference": _finite(m.dm_pvalue_vs_reference),
            }
            for m in self.metrics[self.family]["all"]
        }

    @property
    def config_hash(self) -> str:
        return fingerprint(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "profile": self.profile,
            "config_hash": self.config_hash,
            "params": self.params,
            "folds": self.folds,
            "seconds": self.seconds,
            "notes": self.notes,
            "skill": {str(h): v for h, v in self.skill().items()},
            "metrics": {
                name: {split: [m.to_dict() for m in rows] for split, rows in by.items()}
                for name, by in self.metrics.items()
            },
        }

    def table(self) -> list[str]:
        rows = [
            "| model | h | pinball | skill vs RW (p) | skill vs classical (p) | dir. acc (p) "
            "| base up | rank IC (t) | cover 80 | below q10 (Kupiec, Chr.) "
            "| above q90 (Kupiec, Chr.) | Sharpe | turnover |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, by in self.metrics.items():
            for m in by["all"]:
                b = m.backtest
                versus = (
                    f"{m.skill_vs_reference:+.2%} ({m.dm_pvalue_vs_reference:.3f})"
                    if m.reference
                    else "—"
                )
                below = tail(m.coverage_below, m.kupiec_p_below, m.christoffersen_p_below)
                above = tail(m.coverage_above, m.kupiec_p_above, m.christoffersen_p_above)
                rows.append(
                    f"| {name} | {m.horizon} | {m.pinball:.5f} | "
                    f"{m.skill_vs_rw:+.2%} ({m.dm_pvalue_vs_rw:.3f}) | {versus} | "
                    f"{m.directional_accuracy:.3f} ({m.directional_pvalue:.3f}) | "
                    f"{m.base_rate_up:.3f} | {m.rank_ic:+.3f} ({m.rank_ic_tstat:+.1f}) | "
                    f"{m.coverage_80:.3f} | {below} | {above} | "
                    f"{b.sharpe:+.2f} | {b.turnover:.2f} |"
                )
        return rows

    def fold_table(self) -> list[str]:
        """The model's skill in each test fold, and with 2020 left out."""
        splits = [s for s in self.metrics[self.family] if s != "all"]
        if not splits:
            return []
        rows = [
            "",
            "## Skill per fold",
            "",
            "| split | h | skill vs RW | skill vs classical | DM p vs classical |",
            "|---|---|---|---|---|",
        ]
        for split in splits:
            for m in self.metrics[self.family][split]:
                rows.append(
                    f"| {split} | {m.horizon} | {m.skill_vs_rw:+.2%} | "
                    f"{m.skill_vs_reference:+.2%} | {m.dm_pvalue_vs_reference:.3f} |"
                )
        return rows

    def markdown(self) -> str:
        lines = [
            f"# Model card: {self.family} ({self.profile} profile)",
            "",
            f"Configuration hash `{self.config_hash}` (frozen before the run).",
            "",
            "Quantiles 0.1/0.5/0.9 of the log return at 1, 5 and 20 trading days; "
            + DESCRIPTIONS.get(FAMILY_KINDS.get(self.family, "network"), ""),
            "",
            "## What the evaluation says",
            "",
        ]
        lines += [f"- {v['verdict']}" for v in self.skill().values()]
        lines += [
            "",
            "## Walk-forward results (all test folds)",
            "",
            *self.table(),
            "",
            "Skill = 1 − pinball/pinball(comparison) on the same rows; p = one-sided "
            "Diebold-Mariano (the model loses less), Newey-West with max(20, h − 1) lags. The "
            "classical comparison is the strongest classical baseline, picked on validation "
            "blocks (see Notes). Directional accuracy is tested against the base rate of up "
            "moves (always calling the likelier direction), on non-overlapping outcomes; rank IC "
            "ranks single stocks only, its t-stat with h − 1 Newey-West lags; below/above are "
            "the tails of the 80 % band (0.10 each, nominal), with the p-values of Kupiec's "
            "test of the rate and Christoffersen's independence test, on non-overlapping "
            "outcomes. Backtest: long top third / short "
            f"bottom third by predicted median, tied forecasts untraded, "
            f"{self.params.get('cost_bps')} bps per unit turnover, rebalanced every h days.",
            "",
            *self.fold_table(),
            "",
            "## Folds",
            "",
        ]
        lines += [
            f"- fold {f['index']}: fit ≤ {f['fit_end']}, validation {f['val_start']} → "
            f"{f['val_end']}, test {f['test_start']} → {f['test_end']}"
            for f in self.folds
        ]
        if self.seconds:
            lines += ["", "## Training time (s)", ""]
            lines += [f"- {k}: {v:.1f}" for k, v in self.seconds.items()]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / "card.md", directory / "card.json"
        md.write_text(self.markdown())
        js.write_text(json.dumps(self.to_dict(), indent=2, default=float))
        return md, js
