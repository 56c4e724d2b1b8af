"""Canaries: proof that the evaluation harness can see what it must see. A forecast compared with
itself shows no evidence; a network fed tomorrow's return shows large, significant skill (so a
leak could not hide); a network fed no information at all shows none."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.windows import FeatureConfig
from tests.training.test_behaviour import CONFIG, FEATURES, TICKERS, _synthetic_bars
from training import walkforward as wf
from training.data import Vocab, build_panel
from training.metrics import HorizonMetrics, evaluate


def _h1(panel_changes: str) -> HorizonMetrics:
    panel = build_panel(
        _synthetic_bars(0.0, 4),
        FeatureConfig(features=FEATURES, window=CONFIG.window),
        (1, 5, 20),
    )
    rng = np.random.default_rng(9)
    for series in panel.series.values():
        if panel_changes == "leak":  # today's row carries tomorrow's return
            series.features["log_ret_1"] = series.targets["h1"].fillna(0.0)
        elif panel_changes == "shuffle":  # outcomes dealt at random across each ticker's dates
            order = rng.permutation(len(series.targets))
            series.targets = pd.DataFrame(
                series.targets.to_numpy()[order],
                index=series.targets.index,
                columns=series.targets.columns,
            )
    vocab = Vocab.build(dict.fromkeys(TICKERS, "Synthetic"))
    result = wf.run("hybrid", CONFIG, panel, vocab)
    # against the random walk, and against GARCH: the network's own starting point (its scale)
    garch = ("garch", result.baseline_predictions("garch"))
    random_walk = result.baseline_predictions("random_walk")
    scores = wf.score(result.predictions(), random_walk, CONFIG, garch)
    return next(m for m in scores["all"] if m.horizon == 1)


def test_a_forecast_against_itself_shows_no_evidence() -> None:
    dates = pd.bdate_range("2020-01-01", periods=60)
    frame = pd.DataFrame(
        {
            "date": np.repeat(dates, 3),
            "ticker": np.tile(["A", "B", "C"], 60),
            "horizon": 1,
            "y": np.random.default_rng(1).normal(0, 0.01, 180),
            "q10": -0.0128,
            "q50": 0.0,
            "q90": 0.0128,
        }
    )
    (m,) = evaluate(frame, frame, cost_bps=5, reference=("itself", frame))
    assert (m.skill_vs_rw, m.dm_pvalue_vs_rw) == (0.0, 1.0)
    assert (m.skill_vs_reference, m.dm_pvalue_vs_reference) == (0.0, 1.0)
    assert m.backtest.sharpe == 0.0  # tied forecasts never trade


def test_a_network_fed_tomorrows_return_shows_large_skill() -> None:
    h1 = _h1("leak")
    assert h1.skill_vs_rw > 0.2 and h1.dm_pvalue_vs_rw < 1e-6
    assert h1.directional_accuracy > 0.8


def test_a_network_fed_shuffled_outcomes_shows_no_skill() -> None:
    """Outcomes dealt at random: nothing to learn beyond the level of volatility. The network
    predicts in units of GARCH fitted on the same (shuffled) returns, and gains nothing over it;
    over the random walk it may gain a sliver at most, since a whole fit sample's volatility
    estimates a constant one better than the random walk's trailing 60 days do."""
    h1 = _h1("shuffle")
    assert not (h1.skill_vs_reference > 0 and h1.dm_pvalue_vs_reference < 0.05)
    assert h1.skill_vs_reference <= 0.01 and h1.skill_vs_rw <= 0.01
