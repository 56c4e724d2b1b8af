"""Split conformal calibration of the 10 % and 90 % quantiles, each tail on its own.

Conformalised quantile regression (Romano, Patterson and Candès, 2019), normalised by the band's
half-width and split per tail: on a calibration block (a fold's validation rows, never its test
rows), the score of the lower tail is how far y fell below q10 in half-widths, and the lower
quantile is moved by the score's (1 − τ) empirical quantile, so that a fraction τ of the block
falls below it (likewise above q90). The offsets are per horizon and apply to any model's
predictions, networks and the ensemble alike.

Written here rather than taken from `mapie`: its conformalised quantile regressor wraps
scikit-learn estimators and refits them, while ours are Lightning networks whose validation
predictions already exist; the arithmetic is the few lines below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LOWER, UPPER = 0.1, 0.9  # the tails' nominal levels (q10, q90)
MIN_ROWS = 50  # fewer calibration rows than this at a horizon: leave that horizon as it is


@dataclass(frozen=True)
class Offsets:
    """Per horizon: how many half-widths to move q10 down and q90 up (negative: inwards)."""

    lower: dict[int, float]
    upper: dict[int, float]

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            "lower": {str(h): v for h, v in self.lower.items()},
            "upper": {str(h): v for h, v in self.upper.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, dict[str, float]] | None) -> Offsets | None:
        if not raw:
            return None
        return cls(
            {int(h): float(v) for h, v in raw["lower"].items()},
            {int(h): float(v) for h, v in raw["upper"].items()},
        )


def _half_width(frame: pd.DataFrame) -> np.ndarray:
    return np.maximum((frame["q90"] - frame["q10"]).to_numpy(float) / 2, 1e-12)


def _level(scores: np.ndarray, tail: float) -> float:
    """The finite-sample conformal quantile: the ⌈(n + 1)(1 − tail)⌉-th smallest score."""
    n = len(scores)
    k = min(n, int(np.ceil((n + 1) * (1 - tail))))
    return float(np.partition(scores, k - 1)[k - 1])


def fit(calibration: pd.DataFrame) -> Offsets:
    """Offsets from predictions with realised outcomes (`horizon, y, q10, q50, q90`)."""
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    for horizon, part in calibration.dropna(subset=["y"]).groupby("horizon"):
        if len(part) < MIN_ROWS:
            continue
        width = _half_width(part)
        y = part["y"].to_numpy(float)
        lower[int(horizon)] = _level((part["q10"].to_numpy(float) - y) / width, LOWER)
        upper[int(horizon)] = _level((y - part["q90"].to_numpy(float)) / width, 1 - UPPER)
    return Offsets(lower, upper)


def apply(frame: pd.DataFrame, offsets: Offsets | None) -> pd.DataFrame:
    """`frame` with q10/q90 moved by the offsets (never across the median)."""
    if offsets is None or frame.empty:
        return frame
    out = frame.copy()
    width = _half_width(out)
    horizons = out["horizon"].to_numpy()
    down = np.array([offsets.lower.get(int(h), 0.0) for h in horizons])
    up = np.array([offsets.upper.get(int(h), 0.0) for h in horizons])
    out["q10"] = np.minimum(out["q10"].to_numpy(float) - down * width, out["q50"].to_numpy(float))
    out["q90"] = np.maximum(out["q90"].to_numpy(float) + up * width, out["q50"].to_numpy(float))
    return out
