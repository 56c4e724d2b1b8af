"""Ensemble alignment, weighted quantiles and fitted weights on tiny frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.ensemble import align, combine, fit_weights

Z = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])


def _member(rows: list[tuple], y: float = 0.01) -> pd.DataFrame:
    """(date, ticker, horizon, q10, q50, q90) rows with a shared realised y."""
    frame = pd.DataFrame(rows, columns=["date", "ticker", "horizon", "q10", "q50", "q90"])
    return frame.assign(date=pd.to_datetime(frame["date"]), y=y)


def test_align_joins_on_date_ticker_horizon() -> None:
    a = _member(
        [
            ("2024-01-02", "A", 1, -0.04, 0.0, 0.04),
            ("2024-01-02", "A", 5, -0.08, 0.0, 0.08),
            ("2024-01-02", "B", 1, -0.03, 0.01, 0.05),
        ]
    )
    b = _member(
        [
            ("2024-01-02", "B", 1, -0.01, 0.02, 0.07),  # other order
            ("2024-01-02", "A", 1, -0.02, 0.02, 0.06),
            ("2024-01-03", "A", 1, -0.5, 0.0, 0.5),
        ]
    )  # only in b: dropped
    joined = align({"a": a, "b": b}).set_index(["ticker", "horizon"])
    assert sorted(joined.index) == [("A", 1), ("B", 1)]
    assert {"q10_a", "q50_a", "q90_a", "q10_b", "q50_b", "q90_b", "y"} <= set(joined.columns)
    assert joined.loc[("A", 1), "q90_a"] == 0.04
    assert joined.loc[("A", 1), "q90_b"] == 0.06
    assert joined.loc[("B", 1), "q50_b"] == 0.02


def test_align_without_overlap_raises() -> None:
    a = _member([("2024-01-02", "A", 1, -0.04, 0.0, 0.04)])
    b = _member([("2024-01-02", "A", 5, -0.04, 0.0, 0.04)])
    with pytest.raises(ValueError, match="share no predictions"):
        align({"a": a, "b": b})


def test_combine_weighted_quantiles_by_hand() -> None:
    a = _member([("2024-01-02", "A", 1, -0.04, 0.0, 0.04)], y=0.03)
    b = _member([("2024-01-02", "A", 1, -0.02, 0.02, 0.06)], y=0.03)
    out = combine(align({"a": a, "b": b}), {1: {"a": 0.25, "b": 0.75}})
    # q10 = .25*-.04 + .75*-.02 = -.025; q50 = .75*.02 = .015; q90 = .25*.04 + .75*.06 = .055
    row = out.iloc[0]
    assert row["q10"] == pytest.approx(-0.025)
    assert row["q50"] == pytest.approx(0.015)
    assert row["q90"] == pytest.approx(0.055)
    assert row["y"] == 0.03 and row["ticker"] == "A" and row["horizon"] == 1


def _good_and_bad(n: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    horizon = np.tile([1, 5], n // 2)
    sigma = 0.01 * np.sqrt(horizon)
    y = rng.normal(0.0, sigma)
    keys = pd.DataFrame(
        {
            "date": pd.Timestamp("2024-01-02") + pd.to_timedelta(np.arange(n), "D"),
            "ticker": "A",
            "horizon": horizon,
            "y": y,
        }
    )
    q = y[:, None] + sigma[:, None] * Z[None, :]  # truth-centred, non-crossing
    good = keys.assign(q10=q[:, 0], q50=q[:, 1], q90=q[:, 2])
    bad = keys.assign(q10=q[:, 0] + 0.05, q50=q[:, 1] + 0.05, q90=q[:, 2] + 0.05)
    return good, bad


def test_fit_weights_prefers_the_good_member() -> None:
    good, bad = _good_and_bad()
    weights = fit_weights(align({"good": good, "bad": bad}), ["good", "bad"])
    assert sorted(weights) == [1, 5]
    for by_family in weights.values():
        assert set(by_family) == {"good", "bad"}
        assert all(w >= 0 for w in by_family.values())
        assert sum(by_family.values()) == pytest.approx(1.0)
        assert by_family["good"] > 0.9


def test_combined_quantiles_do_not_cross() -> None:
    good, bad = _good_and_bad()
    wide = bad.assign(q10=bad["q10"] - 0.1, q90=bad["q90"] + 0.1)
    aligned = align({"good": good, "wide": wide})
    for weights in (
        fit_weights(aligned, ["good", "wide"]),
        {1: {"good": 0.5, "wide": 0.5}, 5: {"good": 0.1, "wide": 0.9}},
    ):
        out = combine(aligned, weights)
        assert (out["q10"] <= out["q50"]).all()
        assert (out["q50"] <= out["q90"]).all()


def test_fit_weights_splits_evenly_between_opposite_biases() -> None:
    good, _ = _good_and_bad()
    low = good.assign(**{c: good[c] - 0.02 for c in ("q10", "q50", "q90")})
    high = good.assign(**{c: good[c] + 0.02 for c in ("q10", "q50", "q90")})
    # combined = truth-centred + .02 * (1 - 2 w_low): the symmetric loss is least at w = .5
    weights = fit_weights(align({"low": low, "high": high}), ["low", "high"])
    for by_family in weights.values():
        assert sum(by_family.values()) == pytest.approx(1.0)
        assert by_family["low"] == pytest.approx(0.5, abs=0.05)
