"""Per-tail split conformal calibration: hand-checked offsets, and bands that cover as promised on
fresh rows from the same distribution, whichever way they were wrong before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import conformal


def _frame(y: np.ndarray, q10: float, q90: float, horizon: int = 1) -> pd.DataFrame:
    n = len(y)
    return pd.DataFrame(
        {
            "horizon": np.full(n, horizon),
            "y": y,
            "q10": np.full(n, q10),
            "q50": np.zeros(n),
            "q90": np.full(n, q90),
        }
    )


def test_offsets_by_hand() -> None:
    """Half-width 1; y = −2.0 … 2.0 in 99 steps: the lower score (q10 − y) at the finite-sample
    level ⌈100 · 0.9⌉ / 99 = 90/99 is the 90th smallest."""
    y = np.linspace(-2.0, 2.0, 99)
    offsets = conformal.fit(_frame(y, -1.0, 1.0))
    lower_scores = np.sort(-1.0 - y)
    upper_scores = np.sort(y - 1.0)
    assert offsets.lower[1] == pytest.approx(lower_scores[89])
    assert offsets.upper[1] == pytest.approx(upper_scores[89])
    # symmetric data, symmetric band: the same move on both sides
    assert offsets.lower[1] == pytest.approx(offsets.upper[1])


@pytest.mark.parametrize(("q10", "q90"), [(-0.5, 0.5), (-3.0, 3.0), (-2.0, 0.5)])
def test_calibrated_tails_hit_their_levels_on_fresh_rows(q10: float, q90: float) -> None:
    """Too narrow, too wide, lopsided: after calibration on one sample, each tail is hit about
    10 % of the time on another."""
    rng = np.random.default_rng(3)
    calibration, fresh = rng.standard_normal(4000), rng.standard_normal(20000)
    offsets = conformal.fit(_frame(calibration, q10, q90))
    moved = conformal.apply(_frame(fresh, q10, q90), offsets)
    below = float((moved["y"] < moved["q10"]).mean())
    above = float((moved["y"] > moved["q90"]).mean())
    assert below == pytest.approx(0.1, abs=0.012) and above == pytest.approx(0.1, abs=0.012)


def test_bands_never_cross_the_median_and_small_horizons_are_left_alone() -> None:
    y = np.full(200, 5.0)  # every outcome far above: the lower tail would move past the median
    frame = _frame(y, -1.0, 1.0)
    moved = conformal.apply(frame, conformal.fit(frame))
    assert (moved["q10"] <= moved["q50"]).all() and (moved["q90"] >= moved["q50"]).all()
    few = _frame(np.zeros(10), -1.0, 1.0, horizon=5)
    assert conformal.fit(few).lower == {}  # too few rows to calibrate: unchanged
    pd.testing.assert_frame_equal(conformal.apply(few, conformal.fit(few)), few)
    restored = conformal.Offsets.from_dict(conformal.fit(frame).to_dict())
    assert restored == conformal.fit(frame)
