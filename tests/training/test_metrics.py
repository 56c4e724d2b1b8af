"""Hand-computed checks of the forecast metrics and naive baselines on tiny frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.stats import christoffersen, holm, kupiec
from features.windows import FeatureConfig
from training import baselines
from training.data import Panel, TickerSeries, WindowSet
from training.metrics import (
    Backtest,
    HorizonMetrics,
    backtest,
    coverage,
    diebold_mariano,
    directional,
    evaluate,
    mean_pinball,
    pinball_loss,
    rank_ic,
    row_pinball,
    tails,
    verdict,
)

Z90 = 1.2815515655446004
DATES = pd.date_range("2024-01-01", periods=12, freq="D")


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """(date, ticker, q50, y) rows -> a horizon-1 prediction frame with a +-1 interval."""
    frame = pd.DataFrame(rows, columns=["date", "ticker", "q50", "y"])
    frame["date"] = pd.to_datetime(frame["date"])
    return frame.assign(horizon=1, q10=frame["q50"] - 1, q90=frame["q50"] + 1)


# ---------------------------------------------------------------- pinball


def test_pinball_loss_by_hand() -> None:
    y, q = np.array([0.03, -0.01, 0.0]), np.array([0.0, 0.01, 0.0])
    # diff = y - q = [0.03, -0.02, 0]; loss = max(tau*d, (tau-1)*d)
    # tau 0.1: [0.003, 0.018, 0] -> 0.021/3
    # tau 0.5: [0.015, 0.010, 0] -> 0.025/3
    # tau 0.9: [0.027, 0.002, 0] -> 0.029/3
    assert pinball_loss(y, q, 0.1) == pytest.approx(0.021 / 3, abs=1e-15)
    assert pinball_loss(y, q, 0.5) == pytest.approx(0.025 / 3, abs=1e-15)
    assert pinball_loss(y, q, 0.9) == pytest.approx(0.029 / 3, abs=1e-15)


def test_row_and_mean_pinball_map_columns_to_their_quantile() -> None:
    frame = pd.DataFrame({"y": [0.02, -0.02, 0.0], "q10": -0.01, "q50": 0.0, "q90": 0.01})
    # row 0 (y=.02):  q10 d=.03 -> .003, q50 d=.02 -> .010, q90 d=.01 -> .009  => .022/3
    # row 1 (y=-.02): q10 d=-.01 -> .009, q50 d=-.02 -> .010, q90 d=-.03 -> .003 => .022/3
    # row 2 (y=0):    q10 d=.01 -> .001, q50 0, q90 d=-.01 -> .001             => .002/3
    expected_rows = np.array([0.022, 0.022, 0.002]) / 3
    np.testing.assert_allclose(row_pinball(frame), expected_rows, atol=1e-15)
    assert mean_pinball(frame) == pytest.approx(0.046 / 9, abs=1e-15)
    per_tau = [
        pinball_loss(frame["y"], frame[c], t) for c, t in (("q10", 0.1), ("q50", 0.5), ("q90", 0.9))
    ]
    assert mean_pinball(frame) == pytest.approx(np.mean(per_tau), abs=1e-15)


# ---------------------------------------------------------------- direction, rank, coverage


def test_directional_is_tested_against_the_base_rate_not_a_coin() -> None:
    frame = pd.DataFrame({"q50": [0.01, -0.02, 0.03], "y": [0.02, -0.01, 0.05]})
    found = directional(frame)
    assert (found.hit_rate, found.n) == (1.0, 3)
    assert found.base_rate == pytest.approx(2 / 3)  # two of the three moves were up
    assert found.p_value == pytest.approx((2 / 3) ** 3)  # P(X >= 3 | n=3, p=2/3) = 8/27


def test_directional_skips_zeros_and_matches_binomtest() -> None:
    q50 = [0.1, 0.1, 0.1, 0.1, 0.1, -0.1, -0.1, 0.0, 0.2, -0.3]
    y = [0.2, 0.3, 0.1, 0.4, -0.1, -0.2, 0.2, 0.5, 0.0, 0.0]
    found = directional(pd.DataFrame({"q50": q50, "y": y}))
    # last three rows have a zero -> skipped; 5 of the 7 moves up; 5 hits of 7 vs p = 5/7
    assert found.n == 7 and found.hit_rate == pytest.approx(5 / 7)
    assert found.base_rate == pytest.approx(5 / 7)
    expected = stats.binomtest(5, 7, 5 / 7, alternative="greater").pvalue
    assert found.p_value == pytest.approx(expected) and found.p_value > 0.5


def test_always_up_in_a_rising_market_shows_no_skill() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(0.0005, 0.01, 5000) + 0.002  # up about 58 % of days
    found = directional(pd.DataFrame({"q50": np.full(5000, 0.001), "y": y}))
    assert found.hit_rate > 0.55  # against 0.5 this would be "significant"...
    assert found.p_value > 0.4  # ...against the base rate it is exactly the base rate


def test_directional_thins_overlapping_outcomes() -> None:
    dates = pd.date_range("2024-01-01", periods=10, freq="D")
    frame = pd.DataFrame({"date": dates, "q50": 0.1, "y": [0.1, -0.1] * 5})
    assert directional(frame, horizon=2).n == 5  # every second date
    assert directional(frame, horizon=1).n == 10


def test_rank_ic_perfect_and_reversed_dates() -> None:
    frame = _frame(
        [
            ("2024-01-01", "A", 1.0, 0.1),
            ("2024-01-01", "B", 2.0, 0.2),
            ("2024-01-01", "C", 3.0, 0.3),  # same order -> +1
            ("2024-01-02", "A", 1.0, 0.3),
            ("2024-01-02", "B", 2.0, 0.2),
            ("2024-01-02", "C", 3.0, 0.1),  # reversed -> -1
            ("2024-01-03", "A", 1.0, 0.9),
            ("2024-01-03", "B", 2.0, 0.1),  # 2 names: skipped
        ]
    )
    days = dict(list(frame.groupby("date"))[:2])
    for day, sign in zip(days.values(), (1.0, -1.0), strict=True):
        twice = pd.concat([day, day.assign(date=day["date"] + pd.Timedelta("9D"))])
        assert rank_ic(twice)[0] == pytest.approx(sign)  # a single date gives nan: use two
    mean, t_stat, used = rank_ic(frame)
    assert used == 2
    assert mean == pytest.approx(0.0)
    assert t_stat == pytest.approx(0.0)


def test_rank_ic_mean_and_t_stat_by_hand() -> None:
    frame = _frame(
        [
            ("2024-01-01", "A", 1.0, 0.1),
            ("2024-01-01", "B", 2.0, 0.2),
            ("2024-01-01", "C", 3.0, 0.3),  # rho = 1
            ("2024-01-02", "A", 1.0, 0.1),
            ("2024-01-02", "B", 2.0, 0.3),
            ("2024-01-02", "C", 3.0, 0.2),  # ranks of y: 1,3,2 -> rho = 1 - 6*2/(3*8) = 0.5
        ]
    )
    mean, t_stat, used = rank_ic(frame)
    # mean .75; sd(ddof=1) = sqrt(2 * .25**2) = .35355; t = .75 / (.35355 / sqrt 2) = 3
    assert used == 2
    assert mean == pytest.approx(0.75)
    assert t_stat == pytest.approx(3.0)


def test_coverage_is_inclusive() -> None:
    frame = pd.DataFrame(
        {
            "q10": [-1.0, -1.0, -1.0, -1.0, -1.0],
            "q90": [1.0, 1.0, 1.0, 1.0, 1.0],
            "y": [-1.0, 1.0, 0.5, -1.5, 1.01],  # on q10, on q90, inside, below, above
        }
    )
    assert coverage(frame) == pytest.approx(3 / 5)


def test_rank_ic_counts_single_stocks_only_and_widens_for_overlap() -> None:
    rows = []
    for i, day in enumerate(pd.date_range("2024-01-01", periods=6, freq="D")):
        ys = [0.1, 0.2, 0.3] if i % 3 else [0.3, 0.2, 0.1]
        rows += [(day, t, q, y) for t, q, y in zip("ABC", (1.0, 2.0, 3.0), ys, strict=True)]
        rows.append((day, "SPX", 9.0, -1.0))  # an index, ranked as if it were a stock
    frame = _frame(rows)
    mean, _, used = rank_ic(frame, names={"A", "B", "C"})
    assert used == 6 and mean == pytest.approx((4 - 2) / 6)  # four dates +1, two -1
    ics = np.array([-1.0, 1.0, 1.0, -1.0, 1.0, 1.0])
    c = ics - ics.mean()
    variance = (c @ c + 2 * 0.5 * (c[1:] @ c[:-1])) / 6 * 6 / 5  # 1 lag at h = 2, Bartlett 1/2
    _, t_stat, _ = rank_ic(frame, horizon=2, names={"A", "B", "C"})
    assert t_stat == pytest.approx(ics.mean() / math.sqrt(variance / 6))


def test_tails_count_each_side_on_non_overlapping_outcomes() -> None:
    dates = pd.date_range("2024-01-01", periods=20, freq="D")
    y = np.zeros(20)
    y[[0, 4]] = -2.0  # below q10 = -1, on kept dates (every second)
    y[[2, 3]] = 2.0  # above q90 = +1: day 3 is thinned away
    frame = pd.DataFrame({"date": dates, "ticker": "A", "y": y, "q10": -1.0, "q90": 1.0})
    found = tails(frame, horizon=2)
    assert found.n == 10
    assert (found.below, found.above) == (0.2, 0.1)
    assert found.kupiec_below == pytest.approx(kupiec(2, 10, 0.1)[1])
    assert found.kupiec_above == pytest.approx(1.0)  # exactly the nominal rate
    assert 0 <= found.christoffersen_below <= 1


def test_kupiec_christoffersen_and_holm_by_hand() -> None:
    # LR = -2 [95 ln .9 + 5 ln .1 - 95 ln .95 - 5 ln .05] = 3.3413
    statistic, p_value = kupiec(5, 100, 0.1)
    assert statistic == pytest.approx(3.3413, abs=1e-4)
    assert p_value == pytest.approx(0.06756, abs=1e-5)
    assert kupiec(10, 100, 0.1) == (pytest.approx(0.0), pytest.approx(1.0))
    # 0110001100: n00=3 n01=2 n10=2 n11=2; pi=4/9, pi0=2/5, pi1=1/2
    # LR = -2 [5 ln 5/9 + 4 ln 4/9 - 3 ln .6 - 2 ln .4 - 4 ln .5] = 0.09001
    statistic, p_value = christoffersen([[0, 1, 1, 0, 0, 0, 1, 1, 0, 0]])
    assert statistic == pytest.approx(0.09001, abs=1e-5)
    assert p_value == pytest.approx(0.76416, abs=1e-5)
    clustered = christoffersen([[0] * 40 + [1] * 10 + [0] * 40 + [1] * 10])
    assert clustered[1] < 1e-6
    # sorted .01 x3 = .03; .03 x2 = .06; .04 x1 = .04 -> monotone: .06
    adjusted = holm([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])


# ---------------------------------------------------------------- backtest


def _ranked_day(date: str, order: str, y: dict[str, float]) -> list[tuple]:
    """Three names A, B, C; `order` lists them from the highest q50 to the lowest."""
    q50 = dict(zip(order, (0.03, 0.0, -0.03), strict=True))
    return [(date, t, q50[t], y[t]) for t in "ABC"]


def test_backtest_long_short_with_costs_by_hand() -> None:
    e = np.expm1
    frame = _frame(
        _ranked_day("2024-01-01", "ABC", {"A": 0.02, "B": 0.5, "C": -0.01})
        + _ranked_day("2024-01-02", "ABC", {"A": 0.01, "B": -0.5, "C": 0.0})
        + _ranked_day("2024-01-03", "CBA", {"A": 0.01, "B": 0.5, "C": -0.02})
        + _ranked_day("2024-01-04", "BCA", {"A": -0.01, "B": 0.03, "C": 0.4})
    )
    cost = 10 / 10_000
    # weights +.5 on the top q50, -.5 on the bottom; turnover = sum |w_t - w_{t-1}|
    turnover = np.array([1.0, 0.0, 2.0, 1.0])  # start; same; A,C flip; C->B
    r = (
        np.array(
            [
                0.5 * e(0.02) - 0.5 * e(-0.01),  # long A, short C
                0.5 * e(0.01) - 0.5 * e(0.0),
                0.5 * e(-0.02) - 0.5 * e(0.01),  # long C, short A
                0.5 * e(0.03) - 0.5 * e(-0.01),  # long B, short A
            ]
        )
        - turnover * cost
    )
    result = backtest(frame, horizon=1, cost_bps=10)
    equity = np.cumprod(1 + r)
    assert result.periods == 4
    assert result.turnover == pytest.approx(1.0)
    assert result.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))
    assert r[0] > 0 and r[1] > 0 and r[2] < 0 < r[3]
    assert result.max_drawdown == pytest.approx(-r[2])  # peak after day 2, trough on day 3
    assert result.annual_return == pytest.approx(equity[-1] ** (252 / 4) - 1)


def test_backtest_horizon_two_rebalances_every_second_date() -> None:
    e = np.expm1
    frame = _frame(
        _ranked_day("2024-01-01", "ABC", {"A": 0.02, "B": 0.0, "C": -0.01})
        + _ranked_day("2024-01-02", "CBA", {"A": -0.9, "B": 0.9, "C": 0.9})  # not traded
        + _ranked_day("2024-01-03", "ABC", {"A": 0.01, "B": 0.0, "C": 0.03})
        + _ranked_day("2024-01-04", "CBA", {"A": -0.9, "B": 0.9, "C": 0.9})  # not traded
        + _ranked_day("2024-01-05", "CBA", {"A": 0.01, "B": 0.0, "C": 0.04})
    )
    r = (
        np.array(
            [
                0.5 * e(0.02) - 0.5 * e(-0.01),
                0.5 * e(0.01) - 0.5 * e(0.03),
                0.5 * e(0.04) - 0.5 * e(0.01),
            ]
        )
        - np.array([1.0, 0.0, 2.0]) * 5 / 10_000
    )
    result = backtest(frame, horizon=2, cost_bps=5)
    assert result.periods == 3
    assert result.turnover == pytest.approx(1.0)  # (1 + 0 + 2) / 3; daily would be 1.4
    assert result.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252 / 2))
    assert result.annual_return == pytest.approx(np.prod(1 + r) ** (126 / 3) - 1)


def test_tied_forecasts_take_no_position() -> None:
    rows = []
    for day, y in zip(
        pd.date_range("2024-01-01", periods=6, freq="D"),
        (0.1, -0.2, 0.3, 0.0, -0.1, 0.2),
        strict=True,
    ):
        rows += [(day, t, 0.0, y * k) for t, k in zip("ABC", (1, -1, 2), strict=True)]
    result = backtest(_frame(rows), horizon=1, cost_bps=10)  # the random walk: all q50 zero
    assert result.periods == 6
    assert (result.sharpe, result.annual_return, result.turnover) == (0.0, 0.0, 0.0)
    # a tie at the edge of a side: A and B share the top forecast, only one place is there
    day = pd.Timestamp("2024-02-01")
    edge = _frame([(day, "A", 0.1, 0.1), (day, "B", 0.1, 0.2), (day, "C", -0.1, -0.1)] * 1)
    twice = pd.concat([edge, edge.assign(date=day + pd.Timedelta("1D"))])
    assert backtest(twice, horizon=1, cost_bps=0).sharpe == 0.0  # no long side: no trade


def test_backtest_skips_thin_dates_and_needs_two_periods() -> None:
    frame = _frame(
        [
            *_ranked_day("2024-01-01", "ABC", {"A": 0.02, "B": 0.0, "C": -0.01}),
            ("2024-01-02", "A", 0.1, 0.1),
            ("2024-01-02", "B", 0.0, 0.0),
        ]  # 2 names: skipped
    )
    result = backtest(frame, horizon=1, cost_bps=0)
    assert result.periods == 1
    assert math.isnan(result.sharpe) and math.isnan(result.max_drawdown)


def test_backtest_drawdown_counts_a_loss_in_the_first_period() -> None:
    frame = _frame(
        _ranked_day("2024-01-01", "ABC", {"A": -0.1, "B": 0.0, "C": 0.0})
        + _ranked_day("2024-01-02", "ABC", {"A": 0.05, "B": 0.0, "C": 0.0})
    )
    # equity 1 -> 1 + .5*expm1(-.1) = .9524 -> .9768: the book fell 4.76% below its start
    result = backtest(frame, horizon=1, cost_bps=0)
    assert result.max_drawdown == pytest.approx(-0.5 * np.expm1(-0.1))


# ---------------------------------------------------------------- Diebold-Mariano

D = np.array([-0.3, -0.1, -0.2, -0.4, -0.1, -0.2, -0.3, -0.2, -0.1, -0.3, -0.2, -0.2])


def _two_per_date(diff: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """Two tickers per date whose loss differences average to `diff` on that date."""
    index = pd.DatetimeIndex(np.repeat(DATES, 2))
    loss_b = pd.Series(1.0, index=index)
    return loss_b + np.repeat(diff, 2) + np.tile([0.05, -0.05], len(diff)), loss_b


def test_diebold_mariano_identical_series_give_no_evidence_and_short_ones_nan() -> None:
    loss = pd.Series(np.linspace(0.1, 1.2, 12), index=DATES)
    assert diebold_mariano(loss, loss.copy(), 1) == (0.0, 1.0)
    assert diebold_mariano(loss, loss.copy(), 5, alternative="less") == (0.0, 1.0)
    short = loss.iloc[:9]
    assert all(math.isnan(v) for v in diebold_mariano(short - 0.1, short, 1))


def test_diebold_mariano_horizon_one_by_hand() -> None:
    loss_a, loss_b = _two_per_date(D)
    stat, p_value = diebold_mariano(loss_a, loss_b, horizon=1, bandwidth=0)
    mean = D.sum() / 12  # -2.6 / 12
    variance = ((D - mean) ** 2).sum() / 12  # population variance, no lags
    expected = mean / math.sqrt(variance / 12)
    assert stat == pytest.approx(expected)
    assert stat < -5
    assert p_value == pytest.approx(math.erfc(abs(expected) / math.sqrt(2)))
    assert p_value < 1e-6


def test_diebold_mariano_newey_west_lags_by_hand() -> None:
    loss_a, loss_b = _two_per_date(D)
    c = D - D.mean()
    # horizon 3 -> lags 1, 2 with Bartlett weights 2/3, 1/3
    variance = (c @ c + 2 * (2 / 3) * (c[1:] @ c[:-1]) + 2 * (1 / 3) * (c[2:] @ c[:-2])) / 12
    stat, p_value = diebold_mariano(loss_a, loss_b, horizon=3, bandwidth=2)
    assert stat == pytest.approx(D.mean() / math.sqrt(variance / 12))
    assert p_value == pytest.approx(2 * stats.norm.sf(abs(stat)))


def test_diebold_mariano_uses_at_least_twenty_lags_and_can_be_one_sided() -> None:
    rng = np.random.default_rng(5)
    dates = pd.date_range("2020-01-01", periods=200, freq="D")
    d = np.convolve(rng.normal(-0.05, 1, 230), np.ones(30) / 30, mode="valid")[:200]
    loss_a, loss_b = pd.Series(1 + d, index=dates), pd.Series(1.0, index=dates)
    c = d - d.mean()
    variance = c @ c / 200 + sum(
        2 * (1 - lag / 21) * (c[lag:] @ c[:-lag]) / 200 for lag in range(1, 21)
    )
    stat, _ = diebold_mariano(loss_a, loss_b, horizon=5)  # max(20, 4) lags
    assert stat == pytest.approx(d.mean() / math.sqrt(variance / 200))
    short_stat, _ = diebold_mariano(loss_a, loss_b, horizon=5, bandwidth=4)
    assert abs(short_stat) > abs(stat)  # too few lags overstate the evidence
    _, less = diebold_mariano(loss_a, loss_b, horizon=5, alternative="less")
    assert less == pytest.approx(stats.norm.cdf(stat))


# ---------------------------------------------------------------- evaluate / verdict


def _offset_frames(
    model_offset: np.ndarray, rw_offset: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model and random walk with all three quantiles at y + offset (offset per date)."""
    y = np.tile([0.02, -0.01, 0.005], 12)
    base = pd.DataFrame(
        {"date": np.repeat(DATES, 3), "ticker": np.tile(list("ABC"), 12), "horizon": 1, "y": y}
    )
    model = base.assign(**{c: y + np.repeat(model_offset, 3) for c in ("q10", "q50", "q90")})
    rw = base.assign(**{c: y + np.repeat(rw_offset, 3) for c in ("q10", "q50", "q90")})
    extra = rw.iloc[:1].assign(ticker="ZZZ")  # a row the model does not have: ignored
    return model, pd.concat([rw, extra], ignore_index=True)


def test_evaluate_skill_against_random_walk_by_hand() -> None:
    c = np.linspace(0.01, 0.02, 12)
    model, rw = _offset_frames(c, -2 * c)
    # q = y + c (c > 0): losses (1-tau)c -> .9c, .5c, .1c, mean .5c per row
    # q = y - 2c:        losses tau*2c  -> .2c, 1c, 1.8c, mean 1c per row
    loss, loss_rw = 0.5 * c.mean(), c.mean()
    [m] = evaluate(model, rw, cost_bps=10)
    assert (m.horizon, m.n) == (1, 36)
    assert m.pinball == pytest.approx(loss)
    assert m.skill_vs_rw == pytest.approx(1 - loss / loss_rw)  # 0.5
    assert m.mae_median == pytest.approx(c.mean())
    assert m.coverage_80 == 0.0
    assert m.dm_stat_vs_rw < 0 and m.dm_pvalue_vs_rw < 0.05
    assert verdict(m) == f"beats the random walk at 1 day(s) (DM p={m.dm_pvalue_vs_rw:.3f})"


def test_evaluate_no_better_than_random_walk() -> None:
    a = np.tile([0.01, 0.02], 6)  # the model wins on even dates, the random walk on odd ones
    model, rw = _offset_frames(a, a[::-1].copy())
    [m] = evaluate(model, rw, cost_bps=0)
    assert m.skill_vs_rw == pytest.approx(0.0, abs=1e-12)
    assert m.dm_pvalue_vs_rw >= 0.05
    assert verdict(m) == "no better than a random walk at 1 day(s)"


def _metrics(
    p_value: float, skill: float, stat: float = -2.5, horizon: int = 5, **extra: object
) -> HorizonMetrics:
    bt = Backtest(0.0, 0.0, 0.0, 0.0, 0)
    return HorizonMetrics(
        horizon, 10, 0.1, skill, 0.1, 0.5, 0.5, 0.0, 0.0, 0.8, stat, p_value, bt, **extra
    )


def test_verdict_wording() -> None:
    assert verdict(_metrics(0.05, 0.3)) == "no better than a random walk at 5 day(s)"
    assert verdict(_metrics(float("nan"), 0.3)) == "no better than a random walk at 5 day(s)"
    assert verdict(_metrics(0.01, 0.3)) == "beats the random walk at 5 day(s) (DM p=0.010)"
    worse = _metrics(0.99, -0.3, stat=2.5)  # one-sided: p(worse) = 1 - Φ(2.5) = 0.006
    assert verdict(worse) == "worse than a random walk at 5 day(s) (DM p=0.006)"
    against = _metrics(0.01, 0.3, reference="gjr", dm_pvalue_vs_reference=0.2)
    assert verdict(against).endswith("; no better than gjr")
    ahead = _metrics(0.01, 0.3, reference="gjr", dm_pvalue_vs_reference=0.01)
    assert verdict(ahead).endswith("; beats gjr (DM p=0.010)")


# ---------------------------------------------------------------- baselines


def _window_set() -> WindowSet:
    n = 2
    return WindowSet(
        x=np.zeros((n, 4, 2), np.float32),
        ticker=np.array([1, 2], np.int64),
        sector=np.array([1, 1], np.int64),
        sigma=np.array([0.01, 0.02], np.float32),
        y=np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32),
        dates=np.array(["2024-01-02", "2024-01-03"], "datetime64[ns]"),
        tickers=np.array(["AAA", "BBB"], object),
        scale=np.full((n, 3), 0.05, np.float32),  # a network's scale: never the random walk's
    )


def test_random_walk_quantiles() -> None:
    ws = _window_set()
    q = baselines.random_walk(ws, (1, 5, 20))
    assert q.shape == (2, 3, 3)
    np.testing.assert_array_equal(q[:, :, 1], 0.0)
    sigma = ws.sigma.astype(float)[:, None]
    expected = 1.2815515655446004 * sigma * np.sqrt([1.0, 5.0, 20.0])[None, :]
    np.testing.assert_allclose(q[:, :, 2], expected, rtol=1e-12)
    np.testing.assert_allclose(q[:, :, 0], -expected, rtol=1e-12)
    assert q[1, 2, 2] == pytest.approx(Z90 * 0.02 * math.sqrt(20), rel=1e-6)


def test_historical_drift_centres_on_trailing_drift() -> None:
    ws = _window_set()
    drift = pd.Series([0.001], index=pd.DatetimeIndex(["2024-01-02"]))  # BBB's date missing
    series = {
        t: TickerSeries(pd.DataFrame(), pd.DataFrame(), pd.Series(dtype=float), drift)
        for t in ("AAA", "BBB")
    }
    q = baselines.historical_drift(ws, Panel(FeatureConfig(), (1, 5, 20), series))
    np.testing.assert_allclose(q[0, :, 1], [0.001, 0.005, 0.02], rtol=1e-12)
    np.testing.assert_array_equal(q[1, :, 1], 0.0)  # unknown drift -> zero
    assert q[0, 1, 2] - q[0, 1, 1] == pytest.approx(Z90 * float(ws.sigma[0]) * math.sqrt(5))


def test_to_frame_long_layout() -> None:
    ws = _window_set()
    horizons = (1, 5, 20)
    q = baselines.random_walk(ws, horizons)
    frame = baselines.to_frame(ws, q, horizons)
    assert len(frame) == 2 * 3
    assert list(frame["ticker"]) == ["AAA"] * 3 + ["BBB"] * 3
    assert list(frame["horizon"]) == [1, 5, 20, 1, 5, 20]
    days = [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]
    assert list(frame["date"]) == [days[0]] * 3 + [days[1]] * 3
    np.testing.assert_allclose(frame["y"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)
    np.testing.assert_allclose(frame["q90"], q[:, :, 2].ravel())
    # row 4 = window 1 (sigma .02), horizon 5
    assert frame.loc[4, "q10"] == pytest.approx(-Z90 * 0.02 * math.sqrt(5), rel=1e-6)
    assert (frame["q50"] == 0.0).all()
